"""What only the bus can get wrong: bad input at a worker host, nobody listening, deadlines,
dead workers, full replicas, streamed replies, cancellation and service discovery."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import msgpack
import pytest

from scaffolding_nats import GenerationTask, StreamingGenerationTask, TaskStatus
from scaffolding_nats.proto import (
    ErrorCode,
    FrameType,
    Subjects,
    TaskReply,
    TaskRequest,
    decode,
    encode,
    pack,
)
from scaffolding_nats.runtime import RequestContext, TaskRunner
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from ..procs import worker_argv


async def _ask(nc, subject: str, data: bytes) -> TaskReply:
    msg = await nc.request(subject, data, timeout=5)
    return decode(TaskReply, msg.data)


async def test_bad_input_gets_typed_errors_and_the_host_keeps_serving(nc, prefix):
    subjects = Subjects(prefix)
    subject = subjects.tasks("generation")
    good = GenerationTask(input_str="a b")
    cases = {
        ErrorCode.MALFORMED: b"\xc1not msgpack",
        ErrorCode.UNSUPPORTED_VERSION: pack({"v": 7, "kind": "generation", "task": {}}),
        ErrorCode.INVALID: pack({"v": 1, "kind": "generation", "task": {"temperature": "hot"}}),
        ErrorCode.UNKNOWN_TASK_TYPE: pack({"v": 1, "kind": "teleport", "task": {}}),
        ErrorCode.PAYLOAD_TOO_LARGE: encode(TaskRequest(kind="generation", task={"input_str": "x" * 5000})),
    }
    host = WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects, max_task_bytes=4096)
    async with host:
        for code, data in cases.items():
            msg = await nc.request(subject, data, timeout=5)
            reply = decode(TaskReply, msg.data)
            assert reply.status is TaskStatus.REJECTED
            assert reply.error is not None and reply.error.code is code, code
            assert msg.headers and msg.headers["Nats-Service-Error-Code"] in {"400", "413"}
        reply = await _ask(nc, subject, encode(TaskRequest(kind="generation", task=good.inputs())))
        assert reply.status is TaskStatus.SUCCESS and reply.result["output_str"] == "b a"
        assert reply.task_id == good.id
    assert host.stats.bad_requests == len(cases) and host.stats.completed == 1


async def test_invalid_task_error_keeps_the_task_id(nc, prefix):
    subjects = Subjects(prefix)
    async with WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects):
        reply = await _ask(
            nc,
            subjects.tasks("generation"),
            pack({"v": 1, "kind": "generation", "task": {"id": "abc", "top_p": 7}}),
        )
    assert reply.task_id == "abc" and reply.error is not None and "top_p" in reply.error.message


async def test_not_supported_task_type(nc, prefix):
    subjects = Subjects(prefix)
    task = GenerationTask(input_str="x", worker_tag="reward")

    class OnlyReward(SyntheticWorker):
        def __init__(self) -> None:
            super().__init__()
            self.task_handlers.pop(GenerationTask)

    async with WorkerHost(nc, OnlyReward(), tags=["reward"], subjects=subjects):
        remote = RemoteWorker(nc, subjects=subjects)
        await remote.start()
        await remote.run_task(task)
        await remote.stop()
    assert task.status is TaskStatus.NOT_SUPPORTED and task.error is not None


async def test_tag_without_workers_fails_fast_with_no_worker(nc, prefix):
    remote = RemoteWorker(nc, subjects=Subjects(prefix), max_attempts=3, backoff=0.01)
    await remote.start()
    task = GenerationTask(input_str="x", worker_tag="nobody")
    await asyncio.wait_for(remote.run_task(task), 5)
    await remote.stop()
    assert task.status is TaskStatus.REJECTED
    assert task.error is not None and task.error.code is ErrorCode.NO_WORKER
    assert task.error.details["attempts"] == 3


async def test_deadline_at_the_worker_becomes_timeout(nc, prefix):
    subjects = Subjects(prefix)
    async with WorkerHost(nc, SyntheticWorker(latency_s=5), tags=["generation"], subjects=subjects) as host:
        remote = RemoteWorker(nc, subjects=subjects, timeout=0.3, heartbeat=0.1)
        await remote.start()
        task = GenerationTask(input_str="x")
        await asyncio.wait_for(remote.run_task(task), 5)
        await remote.stop()
        assert task.status is TaskStatus.TIMEOUT
        assert task.error is not None and task.error.code is ErrorCode.TIMEOUT
        await asyncio.sleep(0.1)
        assert host.stats.in_flight == 0  # the worker gave up too: nothing left running


async def test_worker_killed_mid_task_is_retried_on_another_replica(nc, nats_server, prefix):
    """A replica dies with the task; heartbeats stop, the caller retries, a live one answers."""
    subjects = Subjects(prefix)
    doomed = subprocess.Popen(  # noqa: ASYNC220 - killed by signal, never awaited
        worker_argv(nats_server.url, prefix, "synthetic", worker_args={"latency_s": 30}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SCAF_LOG_LEVEL": "WARNING"},
    )
    try:
        assert doomed.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(doomed.stdout.readline), 20)
        assert line.strip() == b"ready"
        remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2, max_attempts=3, backoff=0.01)
        await remote.start()
        task = GenerationTask(input_str="one two")
        running = asyncio.create_task(remote.run_task(task))
        await asyncio.sleep(0.5)  # the doomed replica has it now, heartbeating
        assert not running.done()
        async with WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects):
            doomed.kill()
            await asyncio.wait_for(running, 10)
        await remote.stop()
        assert task.status is TaskStatus.SUCCESS and task.output_str == "two one"
    finally:
        doomed.kill()
        doomed.wait(5)


async def test_full_replica_rejects_so_an_idle_one_gets_the_work(nc, prefix):
    subjects = Subjects(prefix)
    a, b = SyntheticWorker(latency_s=0.5), SyntheticWorker(latency_s=0.5)
    host_a = WorkerHost(nc, a, tags=["generation"], subjects=subjects, max_concurrency=1)
    host_b = WorkerHost(nc, b, tags=["generation"], subjects=subjects, max_concurrency=1)
    async with host_a, host_b:
        remote = RemoteWorker(nc, subjects=subjects, max_attempts=12, backoff=0.005, max_backoff=0.02)
        await remote.start()
        tasks = [GenerationTask(input_str=f"t {i}") for i in range(2)]
        await asyncio.gather(*(remote.run_task(t) for t in tasks))
        await remote.stop()
    assert all(t.status is TaskStatus.SUCCESS for t in tasks)
    assert (a.finished, b.finished) == (1, 1)  # one each: the busy replica took no more


async def test_streamed_reply_frames_and_cancel_reach_the_backend(nc, prefix):
    subjects = Subjects(prefix)
    worker = SyntheticWorker(token_latency_s=0.02)
    async with WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
        remote = RemoteWorker(nc, subjects=subjects)
        runner = TaskRunner({"generation": remote})
        await runner.start()
        ctx = RequestContext()
        words = " ".join(f"w{i}" for i in range(50))
        task = StreamingGenerationTask(input_str=words, streaming_step=3)
        await runner.run([task], ctx)
        assert not task.end_flag and task.output_tokens is not None and len(task.output_tokens) >= 3
        first = task.output_str
        await runner.run([task], ctx)
        assert task.output_str is not None and first is not None and task.output_str.startswith(first)
        task.cancel_flag = True
        await runner.run([task], ctx)
        assert task.end_flag and task.status is TaskStatus.CANCELLED
        for _ in range(50):
            if worker.cancelled:
                break
            await asyncio.sleep(0.02)
        assert worker.cancelled == 1 and worker.finished == 0
        # a stream left to run finishes with every token
        done = StreamingGenerationTask(input_str="a b c d", streaming_step=100)
        await runner.run([done], ctx)
        assert done.end_flag and done.status is TaskStatus.SUCCESS and done.output_str == "d c b a"
        await runner.stop()


async def test_micro_service_discovery_sees_every_worker(nc, prefix):
    subjects = Subjects(prefix)
    async with WorkerHost(
        nc, SyntheticWorker(), tags=["generation", "reward"], subjects=subjects, name=f"w-{prefix}"
    ):
        info = json.loads((await nc.request(f"$SRV.INFO.w-{prefix}", b"", timeout=2)).data)
        assert {e["subject"] for e in info["endpoints"]} == {
            subjects.tasks("generation"),
            subjects.tasks("reward"),
        }
        await _ask(
            nc, subjects.tasks("generation"), encode(TaskRequest(kind="generation", task={"input_str": "x"}))
        )
        stats = json.loads((await nc.request(f"$SRV.STATS.w-{prefix}", b"", timeout=2)).data)
        gen = next(e for e in stats["endpoints"] if e["name"] == "generation")
        assert gen["num_requests"] == 1 and gen["data"]["completed"] == 1 and gen["data"]["capacity"] == 64
        pong = json.loads((await nc.request(f"$SRV.PING.w-{prefix}", b"", timeout=2)).data)
        assert pong["name"] == f"w-{prefix}"


async def test_heartbeats_keep_a_long_task_alive(nc, prefix):
    """A task far longer than the silence limit succeeds, because the worker heartbeats."""
    subjects = Subjects(prefix)
    async with WorkerHost(nc, SyntheticWorker(latency_s=1.0), tags=["generation"], subjects=subjects):
        remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.1, max_attempts=1)
        assert remote.idle_timeout < 1.0
        await remote.start()
        task = GenerationTask(input_str="x y")
        await remote.run_task(task)
        await remote.stop()
    assert task.status is TaskStatus.SUCCESS


async def test_oversized_task_is_refused_before_sending(nc, prefix):
    remote = RemoteWorker(nc, subjects=Subjects(prefix))
    await remote.start()
    task = GenerationTask(input_str="x" * (nc.max_payload + 10))
    await remote.run_task(task)
    await remote.stop()
    assert task.error is not None and task.error.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_frame_types_are_stable_strings():
    assert [f.value for f in FrameType] == ["partial", "heartbeat", "final"]
    assert msgpack.unpackb(encode(TaskReply(task_id="x")))["frame"] == "final"


@pytest.mark.parametrize("n", [32])
async def test_fan_out_of_32_runs_at_once_over_nats(nc, prefix, n):
    subjects = Subjects(prefix)
    from .workers import Rendezvous

    worker = Rendezvous(expect=n)
    async with WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
        remote = RemoteWorker(nc, subjects=subjects)
        runner = TaskRunner({"generation": remote})
        await runner.start()
        tasks = [GenerationTask(input_str=f"s{i}") for i in range(n)]
        await runner.run(tasks, RequestContext())
        await runner.stop()
    assert worker.peak == n and all(t.output_str == f"S{i}" for i, t in enumerate(tasks))


async def test_stopping_a_worker_host_drains_in_flight_tasks(nc, prefix):
    subjects = Subjects(prefix)
    host = WorkerHost(nc, SyntheticWorker(latency_s=0.5), tags=["generation"], subjects=subjects)
    await host.__aenter__()
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.1)
    await remote.start()
    task = GenerationTask(input_str="x y")
    running = asyncio.ensure_future(remote.run_task(task))
    await asyncio.sleep(0.1)
    await host.__aexit__(None, None, None)  # SIGTERM while the task runs
    await running
    await remote.stop()
    assert task.status is TaskStatus.SUCCESS and task.output_str == "y x"


async def test_a_host_that_cannot_drain_in_time_hands_tasks_back(nc, prefix):
    subjects = Subjects(prefix)
    slow = WorkerHost(nc, SyntheticWorker(latency_s=30), tags=["generation"], subjects=subjects, drain_seconds=0.2)
    await slow.__aenter__()
    remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.1, backoff=0.01)
    await remote.start()
    task = GenerationTask(input_str="p q")
    running = asyncio.ensure_future(remote.run_task(task))
    await asyncio.sleep(0.1)
    async with WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects):
        await slow.__aexit__(None, None, None)
        await asyncio.wait_for(running, 5)
    await remote.stop()
    assert task.status is TaskStatus.SUCCESS and task.output_str == "q p"
