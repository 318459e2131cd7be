"""The python tool's run slots are shared fairly between jobs, and a call's time limits count
from its program's start, through the real path: a tools worker hosted on a real nats-server,
tool calls sent by a ``RemoteWorker`` from inside two jobs' requests (the job's id travels in
the task's ``metadata``)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.client import Client

from scaffolding_nats import Controller
from scaffolding_nats.proto import ErrorCode, Subjects
from scaffolding_nats.proto.tasks import TaskStatus, ToolCallTask
from scaffolding_nats.runtime.context import RequestContext, _current
from scaffolding_nats.runtime.request import run_request
from scaffolding_nats.runtime.runner import TaskRunner
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.tools import ToolResult
from scaffolding_nats.workers.tools_worker import ToolsWorker

from .sandboxed import sandboxed_programs

SLEEP = "import time\ntime.sleep(300)"


class RecordingToolsWorker(ToolsWorker):
    """Notes the job of every call it gets."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jobs: list[Hashable] = []

    async def call(self, name: str, arguments: str, **kwargs: Any) -> ToolResult:
        self.jobs.append(kwargs.get("job"))
        return await super().call(name, arguments, **kwargs)


@asynccontextmanager
async def serving(nc: Client, prefix: str, worker: ToolsWorker) -> AsyncIterator[RemoteWorker]:
    subjects = Subjects(prefix)
    async with WorkerHost(nc, worker, tags=["tool_call"], subjects=subjects):
        remote = RemoteWorker(nc, subjects=subjects, timeout=60)
        await remote.start()
        try:
            yield remote
        finally:
            await remote.stop()


async def python_in_job(remote: RemoteWorker, job_id: str, code: str) -> ToolCallTask:
    """A call sent from inside job ``job_id``'s request, as a method's tool call is."""
    ctx = RequestContext()
    ctx.job_id = job_id
    token = _current.set(ctx)
    try:
        task = ToolCallTask(tool_name="python", arguments=json.dumps({"code": code}))
        await remote.run_task(task)
        return task
    finally:
        _current.reset(token)


async def _until_running(count: int) -> None:
    for _ in range(400):  # up to 20 s for the runs to start on a loaded machine
        if len(await asyncio.to_thread(sandboxed_programs, os.getpid())) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} sandboxed programs never ran")


async def test_one_job_with_many_long_calls_does_not_starve_another(nc: Client, prefix: str) -> None:
    """12 calls of time.sleep(300) from one job, then a print(6*7) from another: it gets the
    first slot that frees, and its call timeout does not count the wait."""
    worker = RecordingToolsWorker(call_timeout=4, sandbox={"max_parallel": 2, "wall_seconds": 2, "queue_seconds": 20})
    async with serving(nc, prefix, worker) as remote:
        sleeps = [asyncio.ensure_future(python_in_job(remote, "job-a", SLEEP)) for _ in range(12)]
        try:
            await _until_running(2)
            started = time.monotonic()
            task = await asyncio.wait_for(python_in_job(remote, "job-b", "print(6 * 7)"), 30)
            waited = time.monotonic() - started
            assert task.status is TaskStatus.SUCCESS, task.error
            assert task.result == "42" and not task.is_error, task.stderr
            assert waited < 2 + 10  # one sleep's wall time, plus a loaded machine's slack
            assert "job-b" in worker.jobs and "job-a" in worker.jobs
        finally:
            for s in sleeps:
                s.cancel()
            await asyncio.gather(*sleeps, return_exceptions=True)


async def test_a_call_that_finds_no_free_slot_in_time_fails_typed(nc: Client, prefix: str) -> None:
    worker = ToolsWorker(call_timeout=10, sandbox={"max_parallel": 1, "wall_seconds": 4, "queue_seconds": 0.5})
    async with serving(nc, prefix, worker) as remote:
        sleeping = asyncio.ensure_future(python_in_job(remote, "job-a", SLEEP))
        try:
            await _until_running(1)
            task = await asyncio.wait_for(python_in_job(remote, "job-b", "print(1)"), 30)
            assert task.status is TaskStatus.TIMEOUT and task.error is not None
            assert task.error.code is ErrorCode.TIMEOUT and task.error.retryable
            assert task.error.details["reason"] == "sandbox_busy", task.error
        finally:
            sleeping.cancel()
            await asyncio.gather(sleeping, return_exceptions=True)


class OneToolCall(Controller):
    def process(self, tasks, **kwargs):  # type: ignore[no-untyped-def]
        call = ToolCallTask(tool_name="calculator", arguments=json.dumps({"expression": "6*7"}))
        yield [call]
        tasks[0].output_str = call.result
        tasks[0].status = call.status


async def test_the_job_id_of_a_request_reaches_the_tools_worker(nc: Client, prefix: str) -> None:
    worker = RecordingToolsWorker(python=False)
    async with serving(nc, prefix, worker) as remote:
        done = await run_request(OneToolCall(), TaskRunner({"tool_call": remote}), prompt="x", job_id="job-42")
        assert done.output.text == "42"
    assert worker.jobs == ["job-42"]
