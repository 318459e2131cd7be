"""TaskRunner: routes each task to the worker of its tag and runs a yield's tasks at once.

Workers may be local objects or remote proxies (``transport.RemoteWorker``): the runner does
not know the difference, which is what keeps the transport a seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from .._compat import TaskGroup
from ..proto.errors import ErrorCode, ErrorInfo
from ..proto.tasks import StreamingTask, Task, TaskStatus
from .context import RequestContext
from .worker import Worker, fail


class TaskRunner:
    """``workers`` by tag; ``fallback`` serves every other tag (the controller service's bus
    proxy: whether anyone serves a tag is the bus's to answer)."""

    def __init__(self, workers: Mapping[str, Worker] | None = None, *, fallback: Worker | None = None) -> None:
        self.workers = dict(workers or {})
        self.fallback = fallback

    def _all(self) -> list[Worker]:
        return _unique([*self.workers.values(), *([self.fallback] if self.fallback is not None else [])])

    async def start(self) -> None:
        for worker in self._all():
            await worker.start()

    async def stop(self) -> None:
        for worker in self._all():
            await worker.stop()

    def worker_for(self, tag: str) -> Worker | None:
        return self.workers.get(tag, self.fallback)

    async def run(self, tasks: list[Task], ctx: RequestContext) -> None:
        if len(tasks) == 1:
            await self._run_one(tasks[0], ctx)
            return
        async with TaskGroup() as tg:
            for task in tasks:
                tg.create_task(self._run_one(task, ctx))

    async def _run_one(self, task: Task, ctx: RequestContext) -> None:
        worker = self.worker_for(task.worker_tag)
        if isinstance(task, StreamingTask):
            await self._step_stream(worker, task, ctx)
            return
        task.set_outcome(TaskStatus.PENDING)
        if worker is None:
            fail(task, self._no_worker(task))
            return
        await worker.run_task(task)

    def _no_worker(self, task: Task) -> ErrorInfo:
        return ErrorInfo(
            code=ErrorCode.NO_WORKER,
            message=f"no worker is bound to tag {task.worker_tag!r} (bound: {sorted(self.workers)})",
            details={"worker_tag": task.worker_tag},
        )

    async def _step_stream(self, worker: Worker | None, task: StreamingTask, ctx: RequestContext) -> None:
        """Advance a streamed task (generation or chat) by at least ``streaming_step`` tokens, or cancel it."""
        if task.end_flag:
            return
        handle: AsyncIterator[int] | None = ctx.open_streams.get(task.id)
        if task.cancel_flag:
            if handle is not None:
                await _close(handle)
                ctx.open_streams.pop(task.id, None)
            fail(task, ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by the controller"))
            task.end_flag = True
            return
        if handle is None:
            if worker is None:
                fail(task, self._no_worker(task))
                task.end_flag = True
                return
            handle = worker.stream_task(task)
            ctx.open_streams[task.id] = handle
        new_tokens = 0
        try:
            while not task.end_flag and new_tokens < task.streaming_step:
                new_tokens += await handle.__anext__()
        except StopAsyncIteration:
            task.end_flag = True
        if task.end_flag:
            ctx.open_streams.pop(task.id, None)
            await _close(handle)
            if task.status is TaskStatus.PENDING:
                task.set_outcome(TaskStatus.SUCCESS)


async def _close(handle: Any) -> None:
    aclose = getattr(handle, "aclose", None)
    if aclose is not None:
        await aclose()


async def close_streams(ctx: RequestContext) -> None:
    """Cancel every generation a request left open (early exit, error, or budget)."""
    handles = list(ctx.open_streams.values())
    ctx.open_streams.clear()
    for handle in handles:
        await _close(handle)


def _unique(workers: Any) -> list[Worker]:
    seen: dict[int, Worker] = {}
    for w in workers:
        seen.setdefault(id(w), w)
    return list(seen.values())
