"""Degrade instead of failing: under a deep task queue a job that accepts it runs with fewer
samples and says so (``metadata["degraded"]``); without the load, or without the option, the
same job runs as asked. Real nats-server, worker host and controller service."""

from __future__ import annotations

import asyncio
import time

import pytest

from scaffolding_nats.client import JobClient
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Job, Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.services.controller.degrade import DegradePolicy, cut_samples, pop_policy
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

DEGRADE = {"queue_depth": 6, "min_samples": 2}


def test_policy_is_taken_out_of_the_params() -> None:
    assert pop_policy({"sample_num": 8}) == ({"sample_num": 8}, None)
    assert pop_policy({"sample_num": 8, "degrade": True}) == ({"sample_num": 8}, DegradePolicy())
    assert pop_policy({"degrade": DEGRADE})[1] == DegradePolicy(queue_depth=6, min_samples=2)
    with pytest.raises(ScaffoldingError, match=r"params\.degrade\.min_samples"):
        pop_policy({"degrade": {"min_samples": 0}})
    with pytest.raises(ScaffoldingError, match=r"params\.degrade"):
        pop_policy({"degrade": {"samples": 2}})


def test_every_fan_out_of_the_tree_is_cut() -> None:
    ctl = load_registry().build("mixed_vote")
    changes = cut_samples(ctl, 2)
    assert {(c["param"], c["from"], c["to"]) for c in changes} == {("sample_num", 8, 2), ("sample_num", 5, 2)}
    assert ctl.cot_controller.sample_num == 2 and ctl.program_controller.sample_num == 2  # type: ignore[attr-defined]


def test_traces_and_widths_are_cut_too() -> None:
    registry = load_registry()
    deepconf = registry.build("deepconf_online", {"num_traces": 8, "warmup_traces": 4})
    changes = cut_samples(deepconf, 2)
    assert {(c["param"], c["from"], c["to"]) for c in changes} == {("num_traces", 8, 2), ("warmup_traces", 4, 2)}
    assert deepconf.num_traces == 2 and deepconf.warmup_traces == 2  # type: ignore[attr-defined]
    beam = registry.build("beam_search", {"beam_width": 4})
    assert [(c["param"], c["to"]) for c in cut_samples(beam, 2)] == [("beam_width", 2)]
    assert cut_samples(beam, 2) == []  # nothing above the floor is left


async def test_a_deep_queue_degrades_the_jobs_that_accept_it(nc, prefix: str) -> None:  # type: ignore[no-untyped-def]
    subjects = Subjects(prefix)
    client = JobClient(nc, subjects=subjects)
    asked = {"sample_num": 8, "degrade": DEGRADE}
    async with (
        WorkerHost(nc, SyntheticWorker(latency_s=0.25), tags=["generation"], subjects=subjects, max_concurrency=2),
        ControllerService(nc, load_registry(), subjects=subjects, max_jobs=16) as service,
    ):
        async with asyncio.TaskGroup() as tg:
            busy = Job(method="majority_vote", prompt="a b 1", params={"sample_num": 8})
            load = [tg.create_task(client.run(busy.model_copy(update={"id": f"b{i}"}), timeout=60)) for i in range(3)]
            # 24 tasks, 2 at a time: about 3 s of backlog
            deadline = time.monotonic() + 10
            while (await service.queues.pending("generation") or 0) < DEGRADE["queue_depth"]:
                assert time.monotonic() < deadline, "the queue never got deep"
                await asyncio.sleep(0.1)
            degraded = await client.run(Job(method="majority_vote", prompt="x y 7", params=asked), timeout=60)
            plain = await client.run(Job(method="majority_vote", prompt="x y 7", params={"sample_num": 8}), timeout=60)
        assert all(t.result().num_tasks == 8 for t in load)
        info = degraded.metadata["degraded"]
        assert info["queue"] == "generation" and info["queue_depth"] >= 6 and info["threshold"] == 6
        assert info["changes"] == [{"controller": "majority_vote", "param": "sample_num", "from": 8, "to": 2}]
        assert degraded.num_tasks == 2 and degraded.answer == "7"
        assert "degraded" not in plain.metadata and plain.num_tasks == 8  # did not ask: waited in the queue
        await asyncio.sleep(1.1)  # the backlog gauge is read at most once a second
        calm = await client.run(Job(method="majority_vote", prompt="x y 7", params=asked), timeout=30)
        assert "degraded" not in calm.metadata and calm.num_tasks == 8


def test_the_gateway_shows_what_was_applied() -> None:
    from scaffolding_nats.proto import JobResult
    from scaffolding_nats.services.gateway.openai_api import _extension

    info = {"queue": "generation", "queue_depth": 9, "threshold": 6, "changes": []}
    ext = _extension(Job(method="majority_vote"), JobResult(text="7", metadata={"degraded": info}))
    assert ext["degraded"] == info and ext["metadata"]["degraded"] == info
    assert "degraded" not in _extension(Job(method="majority_vote"), JobResult(text="7"))
