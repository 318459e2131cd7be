"""Owned jobs through the controller: a job is known by its owner and its id together, so two
owners choosing one id get two jobs (de-duplication, record, events, cancels), and a cancel
counts only from the job's owner, whether the job is queued or running."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from scaffolding_nats.client import JobClient
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import ErrorCode, Job, JobEventType, JobState, Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

ID = "predictable-job-0001"


async def _until_kept(nc: Client, subjects: Subjects, subject: str) -> None:
    """Until the cancels stream holds a cancel (so it is in place before the job runs)."""
    js = nc.jetstream()
    for _ in range(200):  # 10 s at most
        try:
            await js.get_last_msg(subjects.cancels_stream, subject)
            return
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no cancel kept on {subject}")


async def test_a_cancel_counts_only_from_the_jobs_owner(nc, prefix):
    subjects = Subjects(prefix)
    alice, mallory = JobClient(nc, subjects=subjects, owner="alice"), JobClient(nc, subjects=subjects, owner="mallory")
    kept, cancelled = Job(method="native", prompt="a b"), Job(method="native", prompt="c d")
    worker = SyntheticWorker()
    async with ControllerService(nc, load_registry(), subjects=subjects):
        # Cancels sent before the jobs run (the case of a queued job): one by Mallory for Alice's
        # job, one by Alice for her own.
        await mallory.cancel(kept.id)
        await alice.cancel(cancelled.id)
        await _until_kept(nc, subjects, subjects.cancel_job(kept.id, "mallory"))
        await _until_kept(nc, subjects, subjects.cancel_job(cancelled.id, "alice"))
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
        assert await mallory.record(kept.id) is None  # her cancel of a job she does not have wrote nothing


async def _run(client: JobClient, job: Job) -> list:
    return [e async for e in client.events(job, timeout=20)]


async def test_two_owners_choosing_one_id_get_two_jobs(nc, prefix):
    """Squatting on NATS: Mallory's job with Alice's id neither stops Alice's (the de-dup
    id, the running set) nor takes over its record or events, before, during or after it."""
    subjects = Subjects(prefix)
    alice, mallory = JobClient(nc, subjects=subjects, owner="alice"), JobClient(nc, subjects=subjects, owner="mallory")
    worker = SyntheticWorker(latency_s=0.3)
    async with (
        ControllerService(nc, load_registry(), subjects=subjects),
        WorkerHost(nc, worker, tags=["generation"], subjects=subjects),
    ):
        # Mallory first (the squatter), then Alice within the de-dup window ...
        first = await _run(mallory, Job(id=ID, method="native", prompt="mallory was here"))
        victim = await _run(alice, Job(id=ID, method="native", prompt="alice asked this"))
        # ... then both at once (during each other's run).
        both = await asyncio.gather(
            _run(alice, Job(id="run-together", method="native", prompt="alice again")),
            _run(mallory, Job(id="run-together", method="native", prompt="mallory again")),
        )
        assert first[-1].result is not None and first[-1].result.text == "here was mallory"
        assert victim[-1].result is not None and victim[-1].result.text == "this asked alice"
        assert [e[-1].result.text for e in both if e[-1].result is not None] == ["again alice", "again mallory"]
        for owner, client, text in (("alice", alice, "this asked alice"), ("mallory", mallory, "here was mallory")):
            record = await client.record(ID)
            assert record is not None and record.owner == owner and record.result is not None
            assert record.result.text == text
            # Each owner's terminal event is kept in the events stream (not de-duplicated away).
            replayed = [e async for e in JobClient(nc, subjects=subjects).replay(ID, owner=owner, timeout=5)]
            assert replayed[-1].result is not None and replayed[-1].result.text == text
        assert worker.started == 4


async def test_a_forged_deduplication_id_does_not_stop_another_owners_job(nc, prefix):
    """A ``Nats-Msg-Id`` is any header: Mallory puts Alice's key on her own job, so the stream
    would drop Alice's publish as a duplicate. ``submit_once`` (the gateway's way) sees that its
    fresh job came back a duplicate and publishes it under an id nobody knows."""
    subjects = Subjects(prefix)
    gateway, mallory = JobClient(nc, subjects=subjects), JobClient(nc, subjects=subjects, owner="mallory")
    async with (
        ControllerService(nc, load_registry(), subjects=subjects),
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
    ):
        await mallory.submit(Job(id="decoy", method="native", prompt="x"), msg_id=f"alice.{ID}")
        job = Job(id=ID, method="native", prompt="one two")
        assert await gateway.submit_once(job, owner="alice") is None
        events = [e async for e in gateway.replay(ID, owner="alice", timeout=20)]
        assert events[-1].result is not None and events[-1].result.text == "two one"
