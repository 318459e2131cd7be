"""Prefix affinity with two real llama-server replicas (SmolLM2) behind one worker, through the
whole stack: a search's steps stay on the replica that holds their prefix, the engines report
the reuse, and a replica killed mid-job costs only its cache."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import ModelServer, NatsServer
from scaffolding_nats.devstack.stack import local_stack
from scaffolding_nats.proto import Job, SamplingParams, Subjects
from scaffolding_nats.proto.tasks import GenerationTask
from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

SLOTS = 4
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Think step by step."
)
BEAM = {"beam_width": 2, "expansions_per_beam": 2, "max_steps": 3, "step_max_tokens": 24}


@pytest.fixture(scope="module")
def engines() -> Iterator[list[ModelServer]]:
    # Both workers pin slots of the same engines: each its own range (generation 0..3, judge 4..7).
    servers = [ModelServer("smollm2", n_ctx=1024, n_threads=1, parallel=2 * SLOTS) for _ in range(2)]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()


@dataclass
class Stack:
    client: JobClient
    generation: OpenAIWorker
    reward: LogprobJudgeRewardWorker


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(nats_server: NatsServer, engines: list[ModelServer]) -> AsyncIterator[Stack]:
    subjects = Subjects(f"aff{zlib.crc32(b'affinity') % 10**6}")
    urls = [e.base_url for e in engines]
    model = engines[0].model
    generation = OpenAIWorker(urls, model=model, max_concurrency=SLOTS, timeout=30, pin_slots=True)
    reward = LogprobJudgeRewardWorker(
        urls, model, max_concurrency=SLOTS, timeout=30, pin_slots=True, slot_offset=SLOTS
    )
    async with local_stack(
        nats_server.url,
        subjects,
        [(generation, ["generation"]), (reward, ["reward"])],
        controller_options={"max_job_seconds": 120.0},
        connect_options={"max_reconnect_attempts": 0},
    ) as up:
        yield Stack(JobClient(up.nc, subjects=subjects), generation, reward)


def _job(seed: int) -> Job:
    return Job(
        method="beam_search",
        params=BEAM,
        messages=[{"role": "user", "content": QUESTION}],
        sampling=SamplingParams(max_tokens=24, temperature=0.7, seed=seed),
    )


def _requests(worker: OpenAIWorker) -> dict[str, int]:
    return {url: s["requests"] for url, s in worker.pool.stats().items()}


async def test_a_search_stays_on_the_replica_that_holds_its_prefix(stack: Stack) -> None:
    before = _requests(stack.generation)
    result = await stack.client.run(_job(seed=1), timeout=120)
    after = _requests(stack.generation)
    served = {url: after[url] - before[url] for url in after}
    assert sum(served.values()) >= 4
    assert sorted(served.values())[0] == 0, f"every step on one replica while it had room: {served}"
    assert result.usage.cached_tokens > 0, "the engines served part of the prompts from their caches"
    assert result.usage.cached_tokens < result.usage.prompt_tokens
    home = max(served, key=lambda u: served[u])
    stats = stack.generation.pool.stats()[home]
    assert stats["prefix_hits"] >= 1 and stats["cached_tokens"] > 0 and stats["hit_rate"] > 0


async def test_a_task_without_a_key_still_runs_on_real_engines(stack: Stack) -> None:
    task = GenerationTask(input_str="The capital of France is", max_tokens=4, temperature=0.0)
    await stack.generation.run_task(task)
    assert task.ok and task.output_str is not None and task.usage is not None
    assert task.affinity_key is None


async def test_a_replica_killed_mid_job_costs_only_its_cache(stack: Stack, engines: list[ModelServer]) -> None:
    job_task = asyncio.create_task(stack.client.run(_job(seed=2), timeout=120))
    victim: ModelServer | None = None
    try:
        for _ in range(400):  # the job's first requests are in flight on its home replica
            busy = [e for e in stack.generation.pool.engines if e.in_flight > 0]
            if busy:
                victim = next(s for s in engines if s.base_url == busy[0].url)
                break
            await asyncio.sleep(0.025)
        assert victim is not None and victim.proc is not None, "the job never reached an engine"
        victim.proc.kill()
        result = await job_task
        assert result.text, "the job finished on the surviving replica"
        stats = stack.generation.pool.stats()
        assert stats[victim.base_url]["failovers"] >= 1
        survivor = next(s for s in engines if s is not victim)
        assert stats[survivor.base_url]["requests"] > 0
    finally:
        if not job_task.done():
            job_task.cancel()
        if victim is not None:
            victim.stop()
            await asyncio.to_thread(victim.start)
