"""Prefix affinity without a model: the routing decisions, the engine pool's bounded load, the
runtime's keys, and the OpenAI worker against stub engines (pinning, failover, cached tokens)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from scaffolding_nats.devstack import free_port
from scaffolding_nats.proto.tasks import ChatMessage, ChatTask, GenerationTask, RewardTask, ToolCallTask
from scaffolding_nats.runtime.affinity import Lineage, affinity_key, assign_keys
from scaffolding_nats.workers import OpenAIWorker
from scaffolding_nats.workers.engine_pool import EnginePool
from scaffolding_nats.workers.routing import SlotState, choose_engine, choose_slot, rank, shared_prefix


@dataclass
class E:
    name: str
    in_flight: int = 0
    slots: int = 2


def _pool(n: int = 2, slots: int = 2, wait: float = 0.2) -> EnginePool:
    return EnginePool(
        [f"http://127.0.0.1:{9000 + i}/v1" for i in range(n)],
        slots=slots,
        make_client=lambda url: openai.AsyncOpenAI(base_url=url, api_key="x"),
        affinity_wait=wait,
        pin_slots=True,
    )


def _key_homed_at(pool: EnginePool, url: str, avoid: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    for i in range(1000):
        key = f"job{i}/k"
        if key not in avoid and rank(key, pool.engines)[0].url == url:
            return key
    raise AssertionError("no key homed there")


# -- routing decisions ----------------------------------------------------------------------


def test_rendezvous_ranks_the_same_everywhere_and_moves_only_the_keys_of_a_gone_engine():
    engines = [E(f"e{i}") for i in range(4)]
    keys = [f"job{i}/x" for i in range(400)]
    homes = {k: rank(k, engines)[0].name for k in keys}
    assert homes == {k: rank(k, list(reversed(engines)))[0].name for k in keys}, "order-independent"
    counts = {e.name: sum(1 for h in homes.values() if h == e.name) for e in engines}
    assert min(counts.values()) > 60, f"keys spread over the engines: {counts}"
    survivors = [e for e in engines if e.name != "e2"]
    for k in keys:
        moved = rank(k, survivors)[0].name
        if homes[k] != "e2":
            assert moved == homes[k], "a key whose home stayed does not move"
        else:
            assert moved == rank(k, engines)[1].name, "a gone engine's key goes to its second choice"


def test_choose_engine_home_then_wait_then_spill():
    a, b = E("a"), E("b")
    key = next(f"k{i}" for i in range(100) if rank(f"k{i}", [a, b])[0] is a)
    assert choose_engine(key, [a, b], waited_enough=False) == (a, "home")
    a.in_flight = 2
    assert choose_engine(key, [a, b], waited_enough=False) == (None, "wait")
    assert choose_engine(key, [a, b], waited_enough=True) == (b, "spill")
    b.in_flight = 2
    assert choose_engine(key, [a, b], waited_enough=True) == (None, "full")
    b.in_flight = 1
    assert choose_engine(None, [a, b], waited_enough=False) == (b, "any"), "no key: the least loaded"


def test_choose_slot_prefers_the_cached_prefix_then_the_key_then_lru():
    question = "Q: " + "a long shared question " * 4
    slots = [
        SlotState(text="unrelated text " * 5, key="other", last_used=1),
        SlotState(text=question + "step one", key="k", last_used=3),
        SlotState(text="", key="k", last_used=2),
    ]
    assert choose_slot(slots, "k", question + "step one\n\nstep two") == 1
    slots[1].busy = True
    assert choose_slot(slots, "k", question + "step one\n\nstep two") == 2, "the key's other slot"
    assert choose_slot(slots, None, "fresh prompt") == 0, "least recently used"
    for s in slots:
        s.busy = True
    assert choose_slot(slots, "k", question) is None
    assert shared_prefix("abcdef", "abcxyz") == 3 and shared_prefix("", "a") == 0


# -- the runtime's keys -----------------------------------------------------------------------


def test_a_continuation_a_probe_and_a_sibling_share_the_key_of_their_prompt():
    question = "Solve step by step. Natalia sold clips to 48 of her friends in April, and then " * 3
    parent = GenerationTask(input_str=question)
    continuation = GenerationTask(input_str=question + "Step 1: 48 / 2 = 24\n\n")
    probe = GenerationTask(input_str=question + "Step 1: 48 / 2 = 24\n\n... Final answer: ")
    other_job = GenerationTask(input_str=question)
    lineage = Lineage()
    assign_keys([parent], "jobA", lineage)
    assign_keys([continuation, probe], "jobA", lineage)
    assign_keys([other_job], "jobB")
    assert parent.affinity_key == continuation.affinity_key == probe.affinity_key
    assert parent.affinity_key is not None and parent.affinity_key.startswith("jobA/")
    assert other_job.affinity_key != parent.affinity_key, "jobs are spread by their own keys"
    judge = RewardTask(prompt=question, candidates=["24"])
    chat = ChatTask(messages=[ChatMessage(role="user", content=question)])
    assign_keys([judge, chat], "jobA", lineage)
    sibling = GenerationTask(input_str=question + "Step 1: another way\n\n")
    assign_keys([sibling], "jobA", lineage)
    assert sibling.affinity_key == parent.affinity_key
    assert len({parent.affinity_key, judge.affinity_key, chat.affinity_key}) == 3
    assert affinity_key("jobA", ToolCallTask(tool_name="calc")) is None
    mine = GenerationTask(input_str=question, affinity_key="user-set")
    assign_keys([mine], "jobA")
    assert mine.affinity_key == "user-set", "a key set by the method wins"
    assert "affinity_key" in mine.inputs(), "it travels with the task's inputs"


# -- the pool: bounded load --------------------------------------------------------------------


async def test_a_hot_key_fills_its_home_then_spills_and_never_starves_other_keys():
    pool = _pool(wait=0.15)
    home, other = pool.engines[0].url, pool.engines[1].url
    hot = _key_homed_at(pool, home)
    held = [await pool.acquire(hot, "p") for _ in range(2)]
    assert {lease.engine.url for lease in held} == {home}, "a key goes home while it has room"
    started = time.monotonic()
    spilled = await pool.acquire(hot, "p")
    waited = time.monotonic() - started
    assert spilled.engine.url == other and spilled.route == "spill"
    assert 0.1 <= waited < 1.0, f"a short bounded wait for its home first ({waited:.3f}s)"
    cold = _key_homed_at(pool, home, {hot})
    started = time.monotonic()
    lease = await pool.acquire(cold, "q")
    assert lease.engine.url == other and time.monotonic() - started < 1.0, "another job is not starved"
    # Every slot is taken now: the next request waits, and takes the first slot released.
    waiter = asyncio.create_task(pool.acquire(None, "r"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    pool.release(held[0])
    got = await asyncio.wait_for(waiter, 1.0)
    assert got.engine.url == home
    for lease_ in (*held[1:], spilled, lease, got):
        pool.release(lease_)
    assert pool.in_flight == 0
    stats = pool.stats()
    assert stats[home]["home"] == 2 and stats[other]["spill"] == 2


async def test_a_gone_engine_is_set_aside_and_its_keys_move():
    pool = _pool()
    a, b = pool.engines
    key = _key_homed_at(pool, a.url)
    pool.mark_down(a, ConnectionRefusedError())
    lease = await pool.acquire(key, "p")
    assert lease.engine is b, "the key's next engine takes it at once"
    pool.release(lease)
    a.down_until = 0.0  # back (a restarted replica)
    lease = await pool.acquire(key, "p")
    assert lease.engine is a
    pool.release(lease)


async def test_host_names_resolve_to_every_address():
    pool = EnginePool(
        ["http://localhost:8080/v1"],
        slots=1,
        make_client=lambda url: openai.AsyncOpenAI(base_url=url, api_key="x"),
        resolve_every=60.0,
    )
    await pool.refresh(force=True)
    urls = [e.url for e in pool.engines]
    assert urls and all(u.endswith(":8080/v1") for u in urls)
    assert any("127.0.0.1" in u or "[::1]" in u for u in urls)


# -- the worker against stub engines ---------------------------------------------------------


@dataclass
class StubEngine:
    """An OpenAI completions endpoint that caches the prompts it saw (by characters) and says
    how much of each prompt it had, as llama-server does; records every request body."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    delay: float = 0.0
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in head.decode().split("\r\n")
                    if line.lower().startswith("content-length:")
                )
                body = json.loads(await reader.readexactly(length))
                self.bodies.append(body)
                prompt = body["prompt"]
                cached = max((shared_prefix(p, prompt) for p in self.seen), default=0) // 4
                self.seen.append(prompt + "out")
                await asyncio.sleep(self.delay)
                reply = {
                    "id": "c", "object": "text_completion", "created": 0, "model": "m",
                    "choices": [{"text": "out", "index": 0, "finish_reason": "stop", "logprobs": None}],
                    "usage": {
                        "prompt_tokens": len(prompt) // 4, "completion_tokens": 1,
                        "total_tokens": len(prompt) // 4 + 1, "prompt_tokens_details": {"cached_tokens": cached},
                    },
                }  # fmt: skip
                data = json.dumps(reply).encode()
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture
async def stubs() -> AsyncIterator[list[StubEngine]]:
    engines = [StubEngine(), StubEngine()]
    for e in engines:
        e.server = await asyncio.start_server(e.handle, "127.0.0.1", 0)
    try:
        yield engines
    finally:
        for e in engines:
            assert e.server is not None
            e.server.close()


def _worker(urls: list[str], **kw: Any) -> OpenAIWorker:
    return OpenAIWorker(urls, model="m", max_concurrency=2, stream_plain=False, max_retries=0, timeout=5, **kw)


async def test_a_continuation_lands_on_the_engine_and_slot_of_its_parent(stubs: list[StubEngine]):
    worker = _worker([s.base_url for s in stubs], pin_slots=True)
    await worker.start()
    try:
        question = "Question: " + "Janet's ducks lay 16 eggs per day. " * 6
        tasks = [GenerationTask(input_str=question + "Step 1." * i, max_tokens=4) for i in range(4)]
        assign_keys(tasks, "job1", Lineage())
        for task in tasks:  # one after another, as a search's steps come
            await worker.run_task(task)
            assert task.ok, task.error
        served = [len(s.bodies) for s in stubs]
        assert sorted(served) == [0, 4], f"all four on the key's engine: {served}"
        engine = stubs[served.index(4)]
        assert {b["id_slot"] for b in engine.bodies} == {engine.bodies[0]["id_slot"]}, "one slot holds the chain"
        assert all(b["cache_prompt"] is True for b in engine.bodies)
        assert tasks[0].usage is not None and tasks[0].usage.cached_tokens == 0
        assert tasks[3].usage is not None and tasks[3].usage.cached_tokens > 50, "the engine reused the prefix"
        stats = worker.pool.stats()[engine.base_url]
        assert stats["home"] == 4 and stats["prefix_hits"] == 3 and stats["cached_tokens"] > 0
    finally:
        await worker.stop()


async def test_a_task_without_a_key_still_runs_and_no_pin_is_sent_by_default(stubs: list[StubEngine]):
    worker = _worker([s.base_url for s in stubs])
    await worker.start()
    try:
        tasks = [GenerationTask(input_str=f"plain {i}", max_tokens=2) for i in range(4)]
        await asyncio.gather(*(worker.run_task(t) for t in tasks))
        assert all(t.ok and t.output_str == "out" for t in tasks)
        assert all("id_slot" not in b for s in stubs for b in s.bodies), "no llama-server fields unless asked"
        assert all(s.bodies for s in stubs), "keyless load goes to the least loaded engine: both work"
    finally:
        await worker.stop()


async def test_a_dead_engine_costs_one_failed_connection_and_the_task_runs_elsewhere(stubs: list[StubEngine]):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    worker = _worker([dead, stubs[0].base_url])
    await worker.start()
    try:
        tasks = [GenerationTask(input_str=f"Question {i} " * 20, max_tokens=2) for i in range(6)]
        assign_keys(tasks, "job2")
        for task in tasks:
            await worker.run_task(task)
            assert task.ok, task.error
        assert len(stubs[0].bodies) == 6, "each task ran once, on the live engine"
        stats = worker.pool.stats()
        assert stats[dead]["failovers"] == 1, "the dead engine was tried once, then set aside"
    finally:
        await worker.stop()


async def test_affinity_off_spreads_by_load(stubs: list[StubEngine]):
    for s in stubs:
        s.delay = 0.05
    worker = _worker([s.base_url for s in stubs], affinity=False)
    await worker.start()
    try:
        tasks = [GenerationTask(input_str="same prefix " * 10, max_tokens=2) for _ in range(4)]
        assign_keys(tasks, "job3")
        await asyncio.gather(*(worker.run_task(t) for t in tasks))
        assert [len(s.bodies) for s in stubs] == [2, 2]
    finally:
        await worker.stop()


async def test_a_continuation_follows_its_parent_to_the_engine_it_spilled_to():
    pool = _pool(slots=1, wait=0.05)
    a, b = pool.engines
    key = _key_homed_at(pool, a.url)
    question = "Question: how many clips did Natalia sell in April and May altogether? "
    first = await pool.acquire(key, question)
    second = await pool.acquire(key, question)
    assert (first.engine, second.engine, second.route) == (a, b, "spill")
    first.cached_text, second.cached_text = question + "Step A.", question + "Step B."
    pool.release(second)
    pool.release(first)
    on_b = await pool.acquire(key, question + "Step B.\n\nStep two")
    assert on_b.engine is b and on_b.route == "home", "where its prefix was computed, not its hash home"
    on_a = await pool.acquire(key, question + "Step A.\n\nStep two")
    assert on_a.engine is a
    pool.release(on_a)
    pool.release(on_b)
