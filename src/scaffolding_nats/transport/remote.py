"""RemoteWorker: the controller side of the bus. A Worker whose tasks run elsewhere.

Each task goes to ``<prefix>.tasks.<worker_tag>``; frames come back on a private inbox and
are merged into the same task object. Every wait has a deadline: the worker heartbeats while
it works, so a dead worker is noticed after ``idle_timeout`` even during a long generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from ..errors import ProtocolError, ScaffoldingError
from ..proto import codec
from ..proto.errors import RESEND_CODES, ErrorCode, ErrorInfo
from ..proto.messages import FrameType, TaskReply
from ..proto.subjects import Subjects
from ..proto.tasks import Task, TaskStatus
from ..proto.version import PROTOCOL_VERSION
from ..runtime.worker import Worker, fail, mark_end, tokens_generated
from ..telemetry import inject_headers
from .inbox import FrameQueue, ReplyMux


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

    # -- sending and receiving -------------------------------------------------------------

    async def run_task(self, task: Task) -> TaskStatus:
        call = _Call(self, task, streaming=False)
        while await call.next():
            pass
        return task.status

    async def stream_task(self, task: Task) -> AsyncIterator[int]:
        call = _Call(self, task, streaming=True)
        try:
            while await call.next():
                yield call.new_tokens
            yield call.new_tokens
        finally:
            await call.abandon()

    async def _cancel_remote(self, task: Task) -> None:
        """Tell the worker to stop: the caller gave up (cancel, early exit, or deadline)."""
        # A closed connection cannot carry the cancel; the worker's deadline ends the task then.
        with contextlib.suppress(Exception):
            await self.nc.publish(self.subjects.cancel_task(task.id), b"")

    def _decode(self, msg: Msg, task: Task) -> TaskReply:
        if msg.headers and msg.headers.get("Status") == "503":
            raise _Retry(
                ErrorInfo(
                    code=ErrorCode.NO_WORKER,
                    message=f"no worker serves tag {task.worker_tag!r} "
                    f"(nobody subscribes to {self.subjects.tasks(task.worker_tag)})",
                    retryable=True,
                    details={"worker_tag": task.worker_tag},
                )
            )
        try:
            return codec.decode(TaskReply, msg.data)
        except ProtocolError as exc:
            raise ScaffoldingError(
                f"bad reply from the worker for tag {task.worker_tag!r}: {exc.message}",
                code=ErrorCode.WORKER_ERROR,
                details=exc.details,
            ) from None


class _Call:
    """One task's exchange over the bus, across retries. ``next()`` returns True after a
    partial frame (streaming) and False once the task has its final status."""

    def __init__(self, worker: RemoteWorker, task: Task, *, streaming: bool) -> None:
        self.w, self.task, self.streaming = worker, task, streaming
        self.deadline = time.monotonic() + worker.timeout
        self.attempt = 0
        self.inbox: str | None = None
        self.frames: FrameQueue | None = None
        self.streamed = False
        self.tokens_seen = tokens_generated(task)
        self.new_tokens = 0

    async def next(self) -> bool:
        while True:
            try:
                if self.frames is None and not await self._send():
                    return False
                return await self._receive()
            except _Retry as retry:
                self._close()
                left = self.deadline - time.monotonic()
                if self.streamed or self.attempt >= self.w.max_attempts or left <= 0:
                    retry.error.details.setdefault("attempts", self.attempt)
                    self._finish(retry.error)
                    return False
                pause = min(self.w.max_backoff, self.w.backoff * 2 ** (self.attempt - 1))
                await asyncio.sleep(min(pause * (0.5 + random.random()), left))
            except ScaffoldingError as exc:
                await self.abandon()
                self._finish(exc.to_info())
                return False
            except BaseException:
                await self.abandon()
                raise

    async def _send(self) -> bool:
        self.attempt += 1
        task, w = self.task, self.w
        timeout_ms = max(1, int((self.deadline - time.monotonic()) * 1000))
        # Built as a plain map on the hot path; its shape is TaskRequest (see proto/).
        payload = codec.pack(
            {
                "v": PROTOCOL_VERSION,
                "kind": task.kind,
                "task": task.inputs(),
                "timeout_ms": timeout_ms,
                "heartbeat_ms": w._heartbeat_ms,
            }
        )
        limit = w.nc.max_payload
        if limit and len(payload) > limit:
            self._finish(
                ErrorInfo(
                    code=ErrorCode.PAYLOAD_TOO_LARGE,
                    message=f"task of {len(payload)} bytes exceeds the server's max_payload of {limit}",
                    details={"size": len(payload), "limit": limit},
                )
            )
            return False
        self.inbox, self.frames = w._mux.open()
        await w.nc.publish(w.subjects.tasks(task.worker_tag), payload, reply=self.inbox, headers=inject_headers())
        return True

    async def _receive(self) -> bool:
        task, w, frames = self.task, self.w, self.frames
        assert frames is not None
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Retry(_timeout(task, w.timeout))
            reconnects = w.nc.stats["reconnects"]
            try:
                msg = await frames.get(min(w.idle_timeout, left))
            except TimeoutError:
                if self.deadline - time.monotonic() <= 0:
                    raise _Retry(_timeout(task, w.timeout)) from None
                if not w.nc.is_connected or w.nc.stats["reconnects"] != reconnects:
                    continue  # we were cut off, not the worker silent: its liveness clock restarts
                raise _Retry(
                    ErrorInfo(
                        code=ErrorCode.TIMEOUT,
                        message=f"worker for tag {task.worker_tag!r} went silent for {w.idle_timeout:.1f}s",
                        retryable=True,
                        details={"worker_tag": task.worker_tag, "reason": "worker_silent"},
                    )
                ) from None
            reply = w._decode(msg, task)
            if reply.frame is FrameType.HEARTBEAT:
                continue
            try:
                task.merge_results(reply.result)
            except ValidationError as exc:
                raise codec.invalid(exc) from None
            now = tokens_generated(task)
            self.new_tokens, self.tokens_seen = now - self.tokens_seen, now
            if reply.frame is FrameType.PARTIAL:
                self.streamed = True
                if self.streaming:
                    return True
                continue
            self._close()
            if reply.error is not None and reply.error.code in RESEND_CODES:
                raise _Retry(reply.error)
            if reply.error is not None:
                reply.error.details.setdefault("attempts", self.attempt)
            task.set_outcome(reply.status or TaskStatus.WORKER_ERROR, reply.error)
            mark_end(task)
            return False

    def _finish(self, error: ErrorInfo) -> None:
        fail(self.task, error)
        mark_end(self.task)
        self.new_tokens = 0

    def _close(self) -> None:
        if self.inbox is not None:
            self.w._mux.close(self.inbox)
        self.inbox, self.frames = None, None

    async def abandon(self) -> None:
        """The caller stops listening before the final frame: tell the worker to stop too."""
        if self.frames is not None:
            self._close()
            await self.w._cancel_remote(self.task)


def _timeout(task: Task, timeout: float) -> ErrorInfo:
    return ErrorInfo(
        code=ErrorCode.TIMEOUT,
        message=f"{task.kind} task on tag {task.worker_tag!r} did not finish within {timeout}s",
        retryable=False,
        details={"worker_tag": task.worker_tag, "reason": "deadline", "timeout_s": timeout},
    )


