"""Worker: a backend that executes tasks of some types.

Handlers are found by decorating methods with ``@handles(TaskType)`` (or ``@streams`` for
incremental handlers). The handler table is built per instance, so two workers of one class
never share or leak each other's handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ..errors import ScaffoldingError
from ..proto.errors import ErrorCode, ErrorInfo, task_status_for
from ..proto.tasks import ChatTask, GenerationTask, SamplingParams, StreamingTask, Task, TaskStatus

T = TypeVar("T", bound=Task)
Handler = Callable[[Any], Awaitable[None]]
StreamHandler = Callable[[Any], AsyncIterator[int]]

_HANDLES = "__scaffolding_handles__"
_STREAMS = "__scaffolding_streams__"

def status_for(code: ErrorCode) -> TaskStatus:
    return task_status_for(code)


def fail(task: Task, error: ErrorInfo) -> None:
    """Mark a task failed with a typed error."""
    task.set_outcome(status_for(error.code), error)


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, ScaffoldingError):
        return exc.to_info()
    if isinstance(exc, TimeoutError):
        return ErrorInfo(code=ErrorCode.TIMEOUT, message=str(exc) or "timed out", retryable=True)
    return ErrorInfo(code=ErrorCode.WORKER_ERROR, message=f"{type(exc).__name__}: {exc}")


def handles(*task_types: type[Task]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a worker method as the handler of these task types."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _HANDLES, task_types)
        return fn

    return mark


def streams(*task_types: type[Task]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an async-generator method as the incremental handler of these task types: it
    updates the task in place and yields the number of new tokens after each chunk."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _STREAMS, task_types)
        return fn

    return mark


class Worker:
    """Base class of every backend. Subclasses add ``@handles`` methods; nothing else.

    ``sampling_defaults`` are the served model's own sampling settings (``devstack.model_files``
    ``SAMPLING``): every task is given them where it leaves a field unset, before its handler
    runs, so methods need not know the model and anything a method or job sets still wins."""

    def __init__(self) -> None:
        self.sampling_defaults: dict[str, Any] = {}
        self.task_handlers: dict[type[Task], Handler] = {}
        self.stream_handlers: dict[type[Task], StreamHandler] = {}
        for name in dir(type(self)):
            fn = getattr(type(self), name, None)
            for task_type in getattr(fn, _HANDLES, ()):
                self.task_handlers[task_type] = getattr(self, name)
            for task_type in getattr(fn, _STREAMS, ()):
                self.stream_handlers[task_type] = getattr(self, name)

    def register(self, task_type: type[T], handler: Callable[[T], Awaitable[None]]) -> None:
        self.task_handlers[task_type] = handler

    async def start(self) -> None:
        """Open connections; called once before the first task."""

    async def stop(self) -> None:
        """Release connections; called once at shutdown."""

    async def served_models(self) -> list[str]:
        """The backend model names this worker answers for (what a job's ``model`` may name);
        empty when it cannot tell. The worker host asks at start and then every so often, and
        tells whoever asks on the bus (the gateway, to refuse a model nobody serves)."""
        return []

    def kinds(self) -> list[str]:
        """The task kinds this worker has handlers for (a subclass's kind runs on its base's
        handler too, e.g. ``streaming_chat`` as one ``chat`` chunk)."""
        return sorted({t.kind for t in (*self.task_handlers, *self.stream_handlers)})

    def _lookup(self, table: dict[type[Task], Any], task: Task) -> Any:
        for cls in type(task).__mro__:
            if cls in table:
                return table[cls]
        return None

    def supports(self, task: Task) -> bool:
        return self._lookup(self.task_handlers, task) is not None or (
            self._lookup(self.stream_handlers, task) is not None
        )

    def apply_sampling_defaults(self, task: Task) -> None:
        """Fill the model's sampling defaults into the fields ``task`` leaves unset."""
        if self.sampling_defaults and isinstance(task, SamplingParams):
            for name, value in self.sampling_defaults.items():
                if getattr(task, name, None) is None:
                    setattr(task, name, value)

    async def run_task(self, task: Task) -> TaskStatus:
        """Execute one task to completion; never raises for a task failure, only marks it."""
        self.apply_sampling_defaults(task)
        handler = self._lookup(self.task_handlers, task)
        if handler is None:
            stream = self._lookup(self.stream_handlers, task)
            if stream is not None:
                async for _ in self.stream_task(task):
                    pass
                return task.status
            fail(task, _not_supported(self, task))
            return task.status
        started = time.perf_counter()
        try:
            await handler(task)
        except asyncio.CancelledError:
            fail(task, ErrorInfo(code=ErrorCode.CANCELLED, message="task cancelled"))
            raise
        except Exception as exc:
            fail(task, error_info(exc))
            return task.status
        _finish(task, started)
        return task.status

    async def stream_task(self, task: Task) -> AsyncIterator[int]:
        """Execute a task incrementally, yielding new-token counts; ends with the task done.
        Closing the iterator early cancels the work at the backend."""
        self.apply_sampling_defaults(task)
        handler = self._lookup(self.stream_handlers, task)
        if handler is None:
            await self.run_task(task)
            mark_end(task)
            yield tokens_generated(task)
            return
        started = time.perf_counter()
        chunks = handler(task)
        try:
            async for new_tokens in chunks:
                yield new_tokens
        except (asyncio.CancelledError, GeneratorExit):
            fail(task, ErrorInfo(code=ErrorCode.CANCELLED, message="task cancelled"))
            # Close the backend's generator now, not at garbage collection: that is the cancel.
            await chunks.aclose()
            raise
        except Exception as exc:
            fail(task, error_info(exc))
            mark_end(task)
            yield 0
            return
        _finish(task, started)
        mark_end(task)
        yield 0


def _not_supported(worker: Worker, task: Task) -> ErrorInfo:
    return ErrorInfo(
        code=ErrorCode.NOT_SUPPORTED,
        message=f"{type(worker).__name__} has no handler for {task.kind} tasks",
        details={"kind": task.kind, "worker": type(worker).__name__},
    )


def _finish(task: Task, started: float) -> None:
    if task.status is TaskStatus.PENDING:
        task.set_outcome(TaskStatus.SUCCESS)
    if isinstance(task, GenerationTask) and task.latency_s is None:
        task.latency_s = time.perf_counter() - started


def mark_end(task: Task) -> None:
    """A streamed task is over (whichever way it ended)."""
    if isinstance(task, StreamingTask):
        task.end_flag = True


def tokens_generated(task: Task) -> int:
    """Output tokens so far: the usage count when the backend gave one, else the token ids."""
    if isinstance(task, GenerationTask | ChatTask) and task.usage is not None:
        return task.usage.completion_tokens
    if isinstance(task, GenerationTask) and task.output_tokens is not None:
        return len(task.output_tokens)
    return 0
