"""Connections that break mid-task (a real TCP cut in front of nats-server): the caller's
liveness clock stops while the caller is cut off, and a task redelivered away from a cut-off
replica is not also finished there (the old attempt stops)."""

from __future__ import annotations

import asyncio
import time

import nats

from scaffolding_nats import GenerationTask, TaskStatus
from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import RemoteWorker, WorkerHost
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


async def test_a_final_frame_lost_while_the_caller_was_cut_off_reruns_the_task(nats_server, nc, prefix):
    """The task ends (and is acked) while its caller is cut off, so its final frame is lost:
    the caller notices the message is gone and queues the task again, rather than waiting for
    its deadline."""
    subjects = Subjects(prefix)
    worker = SyntheticWorker(latency_s=0.5)
    async with CuttableProxy(nats_server.port) as proxy, WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
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
    assert (worker.started, worker.finished) == (2, 2)  # run again: its first result was lost


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


