"""RemoteWorker: the controller side of the bus. A Worker whose tasks run elsewhere.

Each task goes to ``<prefix>.tasks.<worker_tag>``; frames come back on a private inbox and
are merged into the same task object. Every wait has a deadline: the worker heartbeats while
it works, so a dead worker is noticed after ``idle_timeout`` even during a long generation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from ..errors import ProtocolError, ScaffoldingError
from ..proto import codec
from ..proto.errors import ErrorCode, ErrorInfo
from ..proto.messages import FrameType, TaskReply
from ..proto.subjects import Subjects
from ..proto.tasks import GenerationTask, StreamingGenerationTask, Task, TaskStatus
from ..proto.version import PROTOCOL_VERSION
from ..runtime.worker import Worker, fail
from ..telemetry import inject_headers
from .inbox import ReplyMux

_RETRY_CODES = frozenset({ErrorCode.NO_WORKER, ErrorCode.AT_CAPACITY, ErrorCode.TIMEOUT})


class _Retry(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        self.error = error


class RemoteWorker(Worker):
    """Sends tasks over NATS. Bind one instance to every tag served remotely.

    ``timeout``: total deadline of one task, all attempts included.
    ``heartbeat``: how often the worker host is asked to show it is alive.
    ``max_attempts``: tries on no-responders, at-capacity or a silent (dead) worker.
    """

    def __init__(
        self,
        nc: Client,
        *,
        subjects: Subjects | None = None,
        timeout: float = 600.0,
        heartbeat: float = 1.0,
        max_attempts: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        super().__init__()
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.nc = nc
        self.subjects = subjects or Subjects()
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.idle_timeout = 3 * heartbeat + 0.5
        self._heartbeat_ms = max(50, int(heartbeat * 1000))
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._mux = ReplyMux(nc)

    async def start(self) -> None:
        await self._mux.start()

    async def stop(self) -> None:
        await self._mux.stop()

    def supports(self, task: Task) -> bool:
        return True

    # -- one-shot tasks --------------------------------------------------------------------

    async def run_task(self, task: Task) -> TaskStatus:
        async for _ in self._exchange(task, streaming=False):
            pass
        return task.status

    async def stream_task(self, task: Task) -> AsyncIterator[int]:
        async for new_tokens in self._exchange(task, streaming=True):
            yield new_tokens

    async def _exchange(self, task: Task, *, streaming: bool) -> AsyncIterator[int]:
        """Send the task and merge its frames; retry while nothing has streamed yet."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            attempt += 1
            streamed = False
            try:
                async for new_tokens in self._attempt(task, deadline, streaming):
                    streamed = True
                    yield new_tokens
                return
            except ScaffoldingError as exc:
                fail(task, exc.to_info())
                _end(task)
                if streaming:
                    yield 0
                return
            except _Retry as retry:
                left = deadline - time.monotonic()
                if streamed or attempt >= self.max_attempts or left <= 0:
                    retry.error.details.setdefault("attempts", attempt)
                    fail(task, retry.error)
                    _end(task)
                    if streaming:
                        yield 0
                    return
                pause = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random())
                await asyncio.sleep(min(pause, left))

    async def _attempt(self, task: Task, deadline: float, streaming: bool) -> AsyncIterator[int]:
        subject = self.subjects.tasks(task.worker_tag)
        timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
        # Built as a plain map on the hot path; its shape is TaskRequest (see proto/).
        payload = codec.pack({
            "v": PROTOCOL_VERSION,
            "kind": task.kind,
            "task": task.inputs(),
            "timeout_ms": timeout_ms,
            "heartbeat_ms": self._heartbeat_ms,
        })
        limit = self.nc.max_payload
        if limit and len(payload) > limit:
            fail(task, ErrorInfo(
                code=ErrorCode.PAYLOAD_TOO_LARGE,
                message=f"task of {len(payload)} bytes exceeds the server's max_payload of {limit}",
                details={"size": len(payload), "limit": limit},
            ))
            _end(task)
            yield 0
            return
        inbox, frames = self._mux.open()
        finished = False
        try:
            await self.nc.publish(subject, payload, reply=inbox, headers=_trace_headers())
            tokens_seen = _tokens(task)
            while True:
                idle = min(self.idle_timeout, deadline - time.monotonic())
                if idle <= 0:
                    raise _Retry(_timeout(task, self.timeout))
                try:
                    msg = await frames.get(idle)
                except TimeoutError:
                    if deadline - time.monotonic() <= 0:
                        raise _Retry(_timeout(task, self.timeout)) from None
                    raise _Retry(ErrorInfo(
                        code=ErrorCode.TIMEOUT,
                        message=f"worker for tag {task.worker_tag!r} went silent for {self.idle_timeout:.1f}s",
                        retryable=True,
                        details={"worker_tag": task.worker_tag, "reason": "worker_silent"},
                    )) from None
                reply = self._decode(msg, task)
                if reply.frame is FrameType.HEARTBEAT:
                    continue
                try:
                    task.merge_results(reply.result)
                except ValidationError as exc:
                    raise codec.invalid(exc) from None
                if reply.frame is FrameType.PARTIAL:
                    now = _tokens(task)
                    new, tokens_seen = now - tokens_seen, now
                    if streaming:
                        yield new
                    continue
                finished = True
                if reply.error is not None and reply.error.code in _RETRY_CODES:
                    raise _Retry(reply.error)
                task.status = reply.status or TaskStatus.WORKER_ERROR
                task.error = reply.error
                _end(task)
                if streaming:
                    yield _tokens(task) - tokens_seen
                return
        finally:
            self._mux.close(inbox)
            if not finished:
                await self._cancel_remote(task)

    async def _cancel_remote(self, task: Task) -> None:
        """Tell the worker to stop: the caller gave up (cancel, early exit, or deadline)."""
        try:
            await self.nc.publish(self.subjects.cancel_task(task.id), b"")
        except Exception:  # a closed connection cannot carry the cancel; the deadline will
            pass

    def _decode(self, msg: Msg, task: Task) -> TaskReply:
        if msg.headers and msg.headers.get("Status") == "503":
            raise _Retry(ErrorInfo(
                code=ErrorCode.NO_WORKER,
                message=f"no worker serves tag {task.worker_tag!r} (subject {msg.subject and self.subjects.tasks(task.worker_tag)})",
                retryable=True,
                details={"worker_tag": task.worker_tag},
            ))
        try:
            return codec.decode(TaskReply, msg.data)
        except ProtocolError as exc:
            raise ScaffoldingError(
                f"bad reply from the worker for tag {task.worker_tag!r}: {exc.message}",
                code=ErrorCode.WORKER_ERROR,
                details=exc.details,
            ) from None


def _timeout(task: Task, timeout: float) -> ErrorInfo:
    return ErrorInfo(
        code=ErrorCode.TIMEOUT,
        message=f"{task.kind} task on tag {task.worker_tag!r} did not finish within {timeout}s",
        retryable=False,
        details={"worker_tag": task.worker_tag, "reason": "deadline", "timeout_s": timeout},
    )


def _end(task: Task) -> None:
    if isinstance(task, StreamingGenerationTask):
        task.end_flag = True


def _tokens(task: Task) -> int:
    if isinstance(task, GenerationTask):
        if task.usage is not None:
            return task.usage.completion_tokens
        if task.output_tokens is not None:
            return len(task.output_tokens)
    return 0


def _trace_headers() -> dict[str, str] | None:
    return inject_headers()
