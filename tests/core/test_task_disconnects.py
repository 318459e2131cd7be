"""Connections that break mid-task (a real TCP cut in front of nats-server): the caller's
liveness clock stops while the caller is cut off, a final frame lost with a connection is sent
again by the replica that kept it (not run again), a task redelivered away from a cut-off
replica is not also finished there (the old attempt stops)."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.msg import Msg

from scaffolding_nats import GenerationTask, TaskStatus
from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.transport.finals import KeptFinals
from scaffolding_nats.transport.jetstream import TaskQueueSettings
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .proxy import CuttableProxy


async def _until(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _reconnecting(server, proxy: CuttableProxy):  # type: ignore[no-untyped-def]
    """A connection (as the server's admin user) through ``proxy``, reconnecting quickly."""
    url = server.url.replace(f":{server.port}", f":{proxy.port}")
    return nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)


async def test_the_callers_silence_clock_stops_while_it_is_cut_off(nats_server, nc, prefix):
    """The caller loses NATS for longer than its idle timeout while a worker runs the task:
    that is not the worker's silence, so the task finishes on its first and only attempt."""
    subjects = Subjects(prefix)
    worker = SyntheticWorker(latency_s=5.0)  # ends well after the caller is back
    async with CuttableProxy(nats_server.port) as proxy, WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
        caller_nc = await _reconnecting(nats_server, proxy)
        remote = RemoteWorker(caller_nc, subjects=subjects, heartbeat=0.2, timeout=30)
        assert remote.idle_timeout < 2.0
        await remote.start()
        task = GenerationTask(input_str="p q")
        running = asyncio.create_task(remote.run_task(task))
        await _until(lambda: worker.started == 1, "the worker to start the task")
        proxy.cut(2.0)  # > idle timeout; the caller reconnects afterwards
        await asyncio.wait_for(running, 20)
        await remote.stop()
        await caller_nc.close()
    assert task.status is TaskStatus.SUCCESS and task.output_str == "q p"
    assert worker.started == 1  # never judged dead, never retried


async def test_a_final_frame_lost_while_the_caller_was_cut_off_is_sent_again_not_rerun(nats_server, nc, prefix):
    """The task ends (and is acked) while its caller is cut off, so its final frame is lost:
    the caller notices the message is gone and asks the tag's replicas for the frame; the one
    that kept it sends it again, so the task is not run a second time."""
    subjects = Subjects(prefix)
    worker = SyntheticWorker(latency_s=0.5)
    async with (
        CuttableProxy(nats_server.port) as proxy,
        WorkerHost(nc, worker, tags=["generation"], subjects=subjects) as host,
    ):
        caller_nc = await _reconnecting(nats_server, proxy)
        remote = RemoteWorker(caller_nc, subjects=subjects, heartbeat=0.2, timeout=30)
        await remote.start()
        task = GenerationTask(input_str="m n")
        running = asyncio.create_task(remote.run_task(task))
        await _until(lambda: worker.started == 1, "the worker to start the task")
        proxy.cut(1.5)  # the task finishes meanwhile; its final frame has nowhere to go
        await _until(lambda: worker.finished == 1, "the first run to finish")
        await asyncio.wait_for(running, 20)
        await remote.stop()
        await caller_nc.close()
    assert task.status is TaskStatus.SUCCESS and task.output_str == "n m"
    assert (worker.started, worker.finished) == (1, 1)  # its result was sent again, not made again
    assert host.finals.answered == 1


async def test_a_final_frame_lost_that_no_replica_kept_reruns_the_task(nats_server, nc, prefix):
    """The same loss with a replica that keeps no final frames (as a worker in another
    language): nobody answers the caller's lookup, so the task is queued and run again, rather
    than waiting for its deadline."""
    subjects = Subjects(prefix)
    worker = SyntheticWorker(latency_s=0.5)
    async with (
        CuttableProxy(nats_server.port) as proxy,
        WorkerHost(nc, worker, tags=["generation"], subjects=subjects) as host,
    ):
        host.finals = KeptFinals(max_frames=0)
        caller_nc = await _reconnecting(nats_server, proxy)
        remote = RemoteWorker(caller_nc, subjects=subjects, heartbeat=0.2, timeout=30, final_wait=0.5)
        await remote.start()
        task = GenerationTask(input_str="m n")
        running = asyncio.create_task(remote.run_task(task))
        await _until(lambda: worker.started == 1, "the worker to start the task")
        proxy.cut(1.5)
        await _until(lambda: worker.finished == 1, "the first run to finish")
        await asyncio.wait_for(running, 20)
        await remote.stop()
        await caller_nc.close()
    assert task.status is TaskStatus.SUCCESS and task.output_str == "n m"
    assert (worker.started, worker.finished) == (2, 2)  # run again: its first result was lost


async def test_a_task_queued_while_the_caller_is_cut_off_is_stored_once(nats_server, nc, prefix):
    """The caller queues a task while cut off for longer than its publish timeout (5 s): the
    publish is retried, and both tries reach the stream when it reconnects. The tries carry
    one ``Nats-Msg-Id``, so the stream stores the task once and it runs once."""
    subjects = Subjects(prefix)
    worker = SyntheticWorker()
    async with CuttableProxy(nats_server.port) as proxy, WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
        caller_nc = await _reconnecting(nats_server, proxy)
        remote = RemoteWorker(caller_nc, subjects=subjects, heartbeat=0.2, timeout=30)
        await remote.start()
        assert await remote.run_task(GenerationTask(input_str="warm up")) is TaskStatus.SUCCESS
        proxy.cut(5.6)
        await _until(lambda: not caller_nc.is_connected, "the caller to notice the cut")
        task = GenerationTask(input_str="p q")
        assert await asyncio.wait_for(remote.run_task(task), 20) is TaskStatus.SUCCESS, task.error
        await asyncio.sleep(0.5)  # a second copy, had one been stored, would have started by now
        await remote.stop()
        await caller_nc.close()
    assert task.output_str == "q p"
    assert worker.started == 2  # the warm-up and this task, once


async def test_a_redelivered_task_whose_final_frame_was_kept_is_answered_not_rerun(
    nats_server, nc, prefix, monkeypatch
):
    """The worker's ack of a finished task never reaches the server, so JetStream redelivers
    the task after its ack wait: the replica that kept its final frame answers with it and acks,
    instead of running it again."""
    lost: list[Msg] = []
    real_ack = Msg.ack

    async def lossy_ack(self: Msg) -> None:
        if not lost and b"lost ack" in self.data:
            lost.append(self)  # this ack never leaves
            return
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", lossy_ack)
    subjects = Subjects(prefix)
    worker = SyntheticWorker(latency_s=0.2)
    queue = TaskQueueSettings(ack_wait=1.0)
    async with WorkerHost(nc, worker, tags=["generation"], subjects=subjects, queue=queue) as host:
        remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, timeout=30)
        await remote.start()
        task = GenerationTask(input_str="lost ack")
        assert await remote.run_task(task) is TaskStatus.SUCCESS and task.output_str == "ack lost"
        await _until(lambda: host.stats.replayed == 1, "the redelivered task to be answered")
        info = await nc.jetstream().stream_info(subjects.tasks_stream)
        await remote.stop()
    assert lost and worker.started == 1
    assert info.state.messages == 0  # acked this time


async def test_a_task_redelivered_to_another_replica_is_answered_with_the_peers_kept_frame(
    nats_server, nc, prefix, monkeypatch
):
    """Replica A finishes a task but its ack is lost; while A is busy with another task, the
    redelivery goes to replica B, which asks its peers first: A answers with the kept final
    frame, and B acks the task without running it."""
    lost: list[Msg] = []
    real_ack = Msg.ack

    async def lossy_ack(self: Msg) -> None:
        if not lost and b"lost ack" in self.data:
            lost.append(self)
            return
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", lossy_ack)
    subjects = Subjects(prefix)
    queue = TaskQueueSettings(ack_wait=2.0)
    a, b = SyntheticWorker(latency_s=3.0), SyntheticWorker(latency_s=3.0)
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.5, timeout=30)
    await remote.start()
    async with WorkerHost(nc, a, tags=["generation"], subjects=subjects, max_concurrency=1, queue=queue) as host_a:
        first = GenerationTask(input_str="lost ack")
        assert await remote.run_task(first) is TaskStatus.SUCCESS
        second = GenerationTask(input_str="busy now")
        running = asyncio.create_task(remote.run_task(second))
        await _until(lambda: a.started == 2, "replica A to take the second task")
        async with WorkerHost(nc, b, tags=["generation"], subjects=subjects, queue=queue) as host_b:
            await _until(lambda: host_b.stats.replayed == 1, "the redelivery to be answered by B", timeout=15)
            assert await running is TaskStatus.SUCCESS
    await remote.stop()
    assert lost and first.output_str == "ack lost" and second.output_str == "now busy"
    assert (a.started, b.started) == (2, 0)
    assert host_a.finals.answered == 1


async def test_a_task_redelivered_from_a_cut_off_replica_finishes_once(nats_server, nc, prefix):
    """Replica A is cut off mid-task for longer than the ack wait: the task is redelivered to
    replica B and finishes there; A's attempt stops (its lease lapsed, and the caller cancels
    older attempts), so A never finishes it too."""
    subjects = Subjects(prefix)
    queue = TaskQueueSettings(ack_wait=1.0)
    a, b = SyntheticWorker(latency_s=2.0), SyntheticWorker(latency_s=2.0)
    async with CuttableProxy(nats_server.port) as proxy:
        a_nc = await _reconnecting(nats_server, proxy)
        b_nc = await nats.connect(nats_server.url)
        remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, timeout=30)
        await remote.start()
        async with WorkerHost(a_nc, a, tags=["generation"], subjects=subjects, max_concurrency=1, queue=queue):
            task = GenerationTask(input_str="x y")
            running = asyncio.create_task(remote.run_task(task))
            await _until(lambda: a.started == 1, "replica A to start the task")
            async with WorkerHost(b_nc, b, tags=["generation"], subjects=subjects, max_concurrency=1, queue=queue):
                proxy.cut(4.0)
                await asyncio.wait_for(running, 20)
                await _until(lambda: a_nc.is_connected, "replica A to reconnect")
                await asyncio.sleep(0.5)  # let anything A still had to say arrive
        await remote.stop()
        await a_nc.close()
        await b_nc.close()
    assert task.status is TaskStatus.SUCCESS and task.output_str == "y x"
    assert (a.started, a.finished) == (1, 0)  # A's attempt was stopped, not finished
    assert (b.started, b.finished) == (1, 1)
