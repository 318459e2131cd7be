"""Owned jobs through the controller: a cancel counts only from the job's owner (or a trusted,
owner-less sender), whether the job is queued or running."""

from __future__ import annotations

import asyncio

from scaffolding_nats.client import JobClient
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import ErrorCode, Job, JobEventType, JobState, Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker


async def _until_recorded(kv, key: str) -> None:
    for _ in range(200):  # 10 s at most
        try:
            await kv.get(key)
            return
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no cancel record {key}")


async def test_a_cancel_counts_only_from_the_jobs_owner(nc, prefix):
    subjects = Subjects(prefix)
    alice, mallory = JobClient(nc, subjects=subjects, owner="alice"), JobClient(nc, subjects=subjects, owner="mallory")
    kept, cancelled = Job(method="native", prompt="a b"), Job(method="native", prompt="c d")
    worker = SyntheticWorker()
    async with ControllerService(nc, load_registry(), subjects=subjects) as controller:
        # Cancels sent before the jobs run (the case of a queued job): one by Mallory for Alice's
        # job, one by Alice for her own.
        await mallory.cancel(kept.id)
        await alice.cancel(cancelled.id)
        await _until_recorded(controller.kv, f"mallory.{kept.id}")
        await _until_recorded(controller.kv, f"alice.{cancelled.id}")
        async with WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
            kept_events = [e async for e in alice.events(kept, timeout=20)]
            cancelled_events = [e async for e in alice.events(cancelled, timeout=20)]
        assert kept_events[-1].type is JobEventType.RESULT
        assert cancelled_events[-1].type is JobEventType.ERROR and worker.started == 1
        record = await alice.record(cancelled.id)
        assert record is not None and record.owner == "alice" and record.state is JobState.FAILED
        assert record.error is not None and record.error.code is ErrorCode.CANCELLED
        done = await alice.record(kept.id)
        assert done is not None and done.state is JobState.SUCCEEDED and done.owner == "alice"
