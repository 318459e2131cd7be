"""Load above capacity waits in the tag's work queue: saturation, fairness between jobs, and
cancelled tasks that never run. Real nats-server, in-process worker hosts on their own
connections (the worker-kill test with real processes is in tests/services)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import nats
import pytest

from scaffolding_nats import GenerationTask, TaskStatus
from scaffolding_nats.proto import Subjects
from scaffolding_nats.runtime import RequestContext, handles
from scaffolding_nats.runtime.context import _current
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker


class Counting(SyntheticWorker):
    """Records what ran, in finishing order, and the most tasks it ever ran at once."""

    def __init__(self, latency_s: float = 0.0, gate: asyncio.Event | None = None) -> None:
        super().__init__(latency_s=latency_s)
        self.gate = gate
        self.running = 0
        self.peak = 0
        self.ran: list[str] = []

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.gate is not None and task.input_str == "blocker x":
                await asyncio.wait_for(self.gate.wait(), 20)
            await super().generate(task)
            self.ran.append(task.input_str or "")
        finally:
            self.running -= 1


async def _until(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _hosts(stack: AsyncExitStack, url: str, subjects: Subjects, workers: list[Counting], slots: int) -> None:
    for worker in workers:
        nc = await nats.connect(url)
        stack.push_async_callback(nc.close)
        await stack.enter_async_context(
            WorkerHost(nc, worker, tags=["generation"], subjects=subjects, max_concurrency=slots)
        )


@pytest.fixture
async def remote(nc, prefix) -> AsyncIterator[RemoteWorker]:  # type: ignore[no-untyped-def]
    worker = RemoteWorker(nc, subjects=Subjects(prefix), heartbeat=0.2, timeout=60)
    await worker.start()
    yield worker
    await worker.stop()


@pytest.mark.parametrize("replicas", [1, 4])
async def test_saturation_1000_tasks_256_in_flight_none_fail(nats_server, prefix, remote, replicas):
    """1,000 tasks, 256 at a time, against replicas x 4 slots: all wait their turn, none fail."""
    workers = [Counting(latency_s=0.002) for _ in range(replicas)]
    async with AsyncExitStack() as stack:
        await _hosts(stack, nats_server.url, Subjects(prefix), workers, slots=4)
        tasks = [GenerationTask(input_str=f"w{i} x") for i in range(1000)]
        gate = asyncio.Semaphore(256)

        async def one(task: GenerationTask) -> None:
            async with gate:
                await remote.run_task(task)

        await asyncio.wait_for(asyncio.gather(*(one(t) for t in tasks)), 120)
    failed = [t for t in tasks if t.status is not TaskStatus.SUCCESS]
    assert not failed, [t.error for t in failed[:3]]
    assert all(t.output_str == f"x w{i}" for i, t in enumerate(tasks))
    assert sum(len(w.ran) for w in workers) == 1000  # each ran exactly once
    assert all(w.peak <= 4 for w in workers)  # no replica took more than its slots
    assert all(w.ran for w in workers)  # every replica took a share


async def test_a_later_jobs_task_is_not_starved_by_a_large_job(nats_server, nc, prefix):
    """Job A queues 64 tasks, then job B one: B's task runs after at most A's window, not after
    all of A (FIFO would put it 64th)."""
    subjects = Subjects(prefix)
    worker = Counting(latency_s=0.01)
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, timeout=60, queue_window=4)
    await remote.start()
    async with AsyncExitStack() as stack:
        await _hosts(stack, nats_server.url, subjects, [worker], slots=2)

        async def job(ctx: RequestContext, tasks: list[GenerationTask]) -> None:
            _current.set(ctx)  # this task's own context: the job the tasks belong to
            await asyncio.gather(*(remote.run_task(t) for t in tasks))

        big = [GenerationTask(input_str=f"a{i} x") for i in range(64)]
        small = [GenerationTask(input_str="b0 x")]
        job_a = asyncio.create_task(job(RequestContext(), big))

        async def a_started() -> bool:
            return len(worker.ran) >= 2

        await _until(a_started, "job A to start")
        await asyncio.wait_for(job(RequestContext(), small), 30)
        position = worker.ran.index("b0 x")
        await asyncio.wait_for(job_a, 60)
    await remote.stop()
    assert all(t.status is TaskStatus.SUCCESS for t in [*big, *small])
    # B waited behind at most A's window (4) plus what was running (2) and what finished
    # while B was being queued; FIFO across jobs would have put it after all 64.
    assert position <= 12, (position, worker.ran[: position + 1])


async def test_cancelled_tasks_are_dropped_from_the_queue_unrun(nats_server, nc, prefix):
    """The only slot is busy; a job queues 5 tasks (2 in the stream, 3 held back by its window)
    and is cancelled: none of them ever runs, and the stream is left empty."""
    subjects = Subjects(prefix)
    gate = asyncio.Event()
    worker = Counting(gate=gate)
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, timeout=60, queue_window=2)
    await remote.start()
    js = nc.jetstream()
    async with AsyncExitStack() as stack:
        await _hosts(stack, nats_server.url, subjects, [worker], slots=1)
        blocker = GenerationTask(input_str="blocker x")
        blocked = asyncio.create_task(remote.run_task(blocker))

        async def blocker_running() -> bool:
            return worker.running == 1

        await _until(blocker_running, "the blocker to take the only slot")

        async def job(tasks: list[GenerationTask]) -> None:
            _current.set(RequestContext())
            await asyncio.gather(*(remote.run_task(t) for t in tasks))

        doomed = [GenerationTask(input_str=f"d{i} x") for i in range(5)]
        cancelled_job = asyncio.create_task(job(doomed))

        async def queued(n: int) -> bool:
            """Queued and not taken by any replica (the blocker, taken, is not counted)."""
            info = await js.consumer_info(subjects.tasks_stream, subjects.task_consumer("generation"))
            return info.num_pending == n

        await _until(lambda: queued(2), "the job's window (2) to be queued")
        assert remote.fairness.waiting() == 3
        cancelled_job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled_job
        await _until(lambda: queued(0), "the cancelled tasks to leave the stream")
        assert remote.fairness.waiting() == 0
        assert (await js.stream_info(subjects.tasks_stream)).state.messages == 1  # the blocker alone
        gate.set()
        await asyncio.wait_for(blocked, 10)
        after = GenerationTask(input_str="after x")
        await asyncio.wait_for(remote.run_task(after), 10)
    await remote.stop()
    assert blocker.status is TaskStatus.SUCCESS and after.status is TaskStatus.SUCCESS
    assert worker.ran == ["blocker x", "after x"]  # the cancelled ones never ran


async def test_backlog_and_in_flight_show_in_srv_stats_and_prometheus(nats_server, nc, prefix):
    """One slot busy and three tasks queued: the tag's backlog is 3 and in flight 1, in the
    micro service's stats and in the Prometheus gauges KEDA-style scaling reads."""
    from prometheus_client import REGISTRY

    subjects = Subjects(prefix)
    tag = f"gen{prefix}"
    gate = asyncio.Event()
    worker = Counting(gate=gate)
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, timeout=60)
    await remote.start()
    host_nc = await nats.connect(nats_server.url)
    async with WorkerHost(
        host_nc, worker, tags=[tag], subjects=subjects, max_concurrency=1, name=f"w-{prefix}", queue_stats_every=0.1
    ):
        tasks = [GenerationTask(input_str="blocker x", worker_tag=tag)]
        tasks += [GenerationTask(input_str=f"q{i} x", worker_tag=tag) for i in range(3)]
        running = [asyncio.create_task(remote.run_task(tasks[0]))]

        async def blocker_running() -> bool:
            return worker.running == 1

        await _until(blocker_running, "the blocker to run")
        running += [asyncio.create_task(remote.run_task(t)) for t in tasks[1:]]

        async def stats() -> dict:  # type: ignore[type-arg]
            reply = await nc.request(f"$SRV.STATS.w-{prefix}", b"", timeout=2)
            return json.loads(reply.data)["endpoints"][0]["data"]

        async def backlog_seen() -> bool:
            data = await stats()
            return data["queue_pending"] == 3 and data["tag_in_flight"] == 1

        await _until(backlog_seen, "the backlog in $SRV stats")
        assert REGISTRY.get_sample_value("scaffolding_task_queue_pending", {"tag": tag}) == 3
        assert REGISTRY.get_sample_value("scaffolding_worker_tasks_in_flight", {"tag": tag}) == 1
        assert REGISTRY.get_sample_value("scaffolding_controller_tasks_waiting", {"tag": tag}) == 3
        gate.set()
        await asyncio.wait_for(asyncio.gather(*running), 20)

        async def drained() -> bool:
            return (await stats())["queue_pending"] == 0

        await _until(drained, "the backlog to drain")
        assert REGISTRY.get_sample_value("scaffolding_controller_tasks_waiting", {"tag": tag}) == 0
    await host_nc.close()
    await remote.stop()
    assert all(t.status is TaskStatus.SUCCESS for t in tasks)


async def test_fair_admission_holds_a_jobs_excess_and_forgets_idle_jobs():
    """Pure logic: a job's window admits ``window`` tasks; the next waits for one to leave;
    other jobs are not held by it; a cancelled waiter gives its place up; idle lanes vanish."""
    from scaffolding_nats.transport.fairness import FairAdmission

    fair = FairAdmission(2)
    await fair.enter("a")
    await fair.enter("a")
    third = asyncio.create_task(fair.enter("a"))
    fourth = asyncio.create_task(fair.enter("a"))
    await asyncio.sleep(0)
    assert not third.done() and fair.waiting() == 2
    await asyncio.wait_for(fair.enter("b"), 1)  # another job is not behind job a
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    fair.leave("a")
    await asyncio.wait_for(third, 1)
    assert fair.waiting() == 0
    for key in ("a", "a", "b"):
        fair.leave(key)
    assert fair._lanes == {}
