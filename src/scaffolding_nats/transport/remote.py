"""RemoteWorker: the controller side of the bus. A Worker whose tasks run elsewhere.

Each task is queued in its tag's JetStream work queue (``<prefix>.queue.<worker_tag>``, stream
``<NAME>_TASKS``) with the private inbox its frames should come back on; replicas pull tasks
only into free slots, so a task above the fleet's capacity waits, bounded by its own deadline,
for the first free slot. Frames, heartbeats and cancels stay on core NATS.

Every wait has a deadline. Once a worker starts a task it heartbeats, so a dead worker is
noticed after ``idle_timeout`` (a clock that stops while this side is disconnected from NATS);
JetStream then redelivers the task to another replica, and frames of an older attempt are
ignored and that attempt cancelled, so a task never runs twice at once on the caller's behalf.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from .. import metrics, telemetry
from .._compat import timeout as deadline_after
from ..errors import ProtocolError, ScaffoldingError
from ..proto import codec, frames
from ..proto.errors import ErrorCode, ErrorInfo, resends
from ..proto.messages import FrameType
from ..proto.subjects import HEADER_ATTEMPTS_BELOW, HEADER_MSG_ID, HEADER_REPLY_TO, Subjects
from ..proto.tasks import JOB_ID_KEY, Task, TaskStatus
from ..runtime.context import current_request
from ..runtime.worker import Worker, fail, mark_end, tokens_generated
from .fairness import FairAdmission
from .inbox import FrameQueue, ReplyMux


class _Requeue(Exception):
    """The task's queued message is gone but no final frame came: queue the task again."""


class _Fail(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        self.error = error


class RemoteWorker(Worker):
    """Sends tasks over NATS. Bind one instance to every tag served remotely.

    ``timeout``: total deadline of one task, queueing and every attempt included.
    ``heartbeat``: how often a worker is asked to show it is alive while it runs a task.
    ``max_attempts``: checks for a consumer of the tag before failing with ``no_worker``, and
    attempts that may go silent (worker died) before the task fails.
    ``queue_window``: tasks one job (request) keeps queued-but-not-started per tag; the rest
    wait here, so one large job cannot starve later ones (see ``fairness``).
    ``final_wait``: how long to wait for a replica's kept final frame (see ``finals``) before
    queuing again a task whose frames were lost while this side was cut off.
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
        queue_window: int = 16,
        final_wait: float = 2.0,
    ) -> None:
        super().__init__()
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects or Subjects()
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.idle_timeout = 3 * heartbeat + 0.5
        self._heartbeat_ms = max(50, int(heartbeat * 1000))
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fairness = FairAdmission(queue_window)
        self.final_wait = final_wait
        self._mux = ReplyMux(nc)
        self._served: set[str] = set()  # tags whose consumer exists (some worker declared it)
        self._waiting_gauges: dict[str, Any] = {}

    def _waiting_gauge(self, tag: str) -> Any:
        gauge = self._waiting_gauges.get(tag)
        if gauge is None:
            gauge = self._waiting_gauges[tag] = metrics.TASKS_WAITING.labels(tag)
        return gauge

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

    async def _cancel_remote(self, task: Task, *, below: int | None = None) -> None:
        """Tell workers to stop ``task`` (only attempts before ``below`` when given)."""
        # A closed connection cannot carry the cancel; the worker's deadline ends the task then.
        headers = {HEADER_ATTEMPTS_BELOW: str(below)} if below is not None else None
        with contextlib.suppress(Exception):
            await self.nc.publish(self.subjects.cancel_task(task.id), b"", headers=headers)

    async def _served_by_someone(self, tag: str, left: float) -> bool:
        if tag in self._served:
            return True
        try:
            consumer = self.subjects.task_consumer(tag)
            await self.js.consumer_info(self.subjects.tasks_stream, consumer, timeout=min(2.0, left))
        except NotFoundError:
            return False
        except Exception:  # no JetStream answer (yet): treat as not served, the caller retries
            return False
        self._served.add(tag)
        return True

    def _decode(self, msg: Msg, task: Task) -> frames.Frame:
        try:
            return frames.read_reply(msg.data)
        except ProtocolError as exc:
            raise ScaffoldingError(
                f"bad reply from the worker for tag {task.worker_tag!r}: {exc.message}",
                code=ErrorCode.WORKER_ERROR,
                details=exc.details,
            ) from None


class _Call:
    """One task's exchange over the bus, across attempts. ``next()`` returns True after a
    partial frame (streaming) and False once the task has its final status."""

    def __init__(self, worker: RemoteWorker, task: Task, *, streaming: bool) -> None:
        self.w, self.task, self.streaming = worker, task, streaming
        self.deadline = time.monotonic() + worker.timeout
        self.inbox: str | None = None
        self.frames: FrameQueue | None = None
        self.seq: int | None = None  # the task's message in the stream, while it may be there
        self.attempt = 0  # the delivery whose frames are followed; 0 until a worker starts it
        self.started = False
        self.silent_attempts = 0
        self.quiet_since = 0.0
        self.reconnects = worker.nc.stats.get("reconnects", 0)
        self.streamed = False
        self.tokens_seen = tokens_generated(task)
        self.new_tokens = 0
        ctx = current_request()
        self.job: str | None = ctx.job_id if ctx is not None else None  # fairness lane: one per job
        self.admitted = False
        self.waiting = False
        self.start_by: float | None = None  # the task's ``start_timeout``, from when it is queued
        # Asked the replicas for a final frame lost with a connection: until when, and how the
        # task ends if none comes (None: queued again).
        self.asking: tuple[float, ErrorInfo | None] | None = None
        self.unacked: tuple[bytes, dict[str, str]] | None = None  # the publish, until its PubAck
        self.ack_due = 0.0  # when to publish again if no PubAck has come
        self.publishes = 0

    async def next(self) -> bool:
        try:
            while True:
                try:
                    if self.frames is None and not await self._send():
                        return False
                    return await self._receive()
                except _Requeue:
                    self._close()
                    self.seq, self.attempt, self.started, self.asking = None, 0, False, None
                    self.unacked = None
        except _Fail as failure:
            await self.abandon()
            self._finish(failure.error)
            return False
        except ScaffoldingError as exc:
            await self.abandon()
            self._finish(exc.to_info())
            return False
        except BaseException:
            await self.abandon()
            raise

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    async def _send(self) -> bool:
        task, w = self.task, self.w
        inputs = task.inputs()
        if self.job is not None:  # workers may be fair between jobs too (the tools worker is)
            inputs["metadata"] = {**inputs.get("metadata", {}), JOB_ID_KEY: self.job}
        payload = frames.request(
            task.kind, inputs, timeout_ms=max(1, int(self._left() * 1000)), heartbeat_ms=w._heartbeat_ms
        )
        too_large = codec.oversize(payload, w.nc.max_payload, "task")
        if too_large is not None:
            self._finish(too_large)
            return False
        await self._await_consumer()
        self._set_waiting(True)
        if self.job is not None:
            try:
                async with deadline_after(max(0.0, self._left())):
                    await w.fairness.enter(self.job)
            except TimeoutError:
                raise _Fail(_timeout(task, w.timeout)) from None
            self.admitted = True
        self.inbox, self.frames = w._mux.open()
        # The inbox names this request: a publish retried while the stream's PubAck was lost (an
        # outage) is stored once, not once per try (each copy would run).
        headers = {HEADER_REPLY_TO: self.inbox, HEADER_MSG_ID: self.inbox}
        if telemetry.enabled():
            headers = telemetry.inject_headers(headers) or headers
        self.unacked = (payload, headers)
        await self._publish()
        if task.start_timeout is not None and self.start_by is None:
            self.start_by = time.monotonic() + task.start_timeout
        return True

    async def _await_consumer(self) -> None:
        """Fail fast with ``no_worker`` when no worker ever declared the tag's queue consumer."""
        tag, w = self.task.worker_tag, self.w
        for attempt in range(1, w.max_attempts + 1):
            if await w._served_by_someone(tag, max(0.1, self._left())):
                return
            if attempt == w.max_attempts or self._left() <= 0:
                break
            await asyncio.sleep(min(self._pause(attempt), max(0.0, self._left())))
        raise _Fail(
            ErrorInfo(
                code=ErrorCode.NO_WORKER,
                message=f"no worker serves tag {tag!r} (no consumer {w.subjects.task_consumer(tag)} "
                f"on stream {w.subjects.tasks_stream})",
                retryable=True,
                details={"worker_tag": tag, "attempts": attempt},
            )
        )

    def _pause(self, attempt: int) -> float:
        pause = min(self.w.max_backoff, self.w.backoff * 2 ** (attempt - 1))
        return pause * (0.5 + random.random())

    async def _publish(self) -> None:
        """Queue the task. Its PubAck comes to the task's inbox, read with its frames (no round
        trip waited for one publish at a time): ``_on_pub_ack``. A publish that fails, is
        refused or is not acked within 5 s is made again (the same ``Nats-Msg-Id``: stored
        once) until the deadline."""
        assert self.unacked is not None
        w, (payload, headers) = self.w, self.unacked
        while True:
            self.publishes += 1
            try:
                await w.nc.publish(
                    w.subjects.task_queue(self.task.worker_tag), payload, reply=self.inbox or "", headers=headers
                )
                self.ack_due = time.monotonic() + min(5.0, max(0.1, self._left()))
                return
            except Exception as exc:
                await self._publish_failed(exc)

    async def _publish_failed(self, exc: BaseException) -> None:
        """Pause before the next publish, or fail when the deadline has passed."""
        if self._left() <= 0:
            raise _Fail(
                ErrorInfo(
                    code=ErrorCode.TIMEOUT,
                    message=f"could not queue the task on tag {self.task.worker_tag!r}: {exc!r}",
                    retryable=True,
                    details={"worker_tag": self.task.worker_tag, "reason": "queue_unavailable"},
                )
            ) from None
        await asyncio.sleep(min(self._pause(self.publishes), max(0.0, self._left())))

    async def _on_pub_ack(self, data: bytes) -> None:
        """The stream's answer to the task's publish: it names the message (``seq``) or refuses
        it (a full stream, ...), and then the task is published again after a pause."""
        if self.unacked is None:
            return  # the answer to a publish made again: the first one counted
        try:
            ack = json.loads(data)
        except ValueError:
            ack = {"error": data[:200].decode(errors="replace")}
        if "error" in ack or "seq" not in ack:
            await self._publish_failed(RuntimeError(f"the task stream refused the task: {ack.get('error', ack)}"))
            await self._publish()
            return
        self.seq, self.unacked = int(ack["seq"]), None

    def _read_pub_acks(self) -> None:
        """PubAcks that came but were not read yet (the caller leaves early): their ``seq``."""
        if self.frames is not None and self.unacked is not None:
            for msg in self.frames.items:
                if msg.data[:1] == b"{":
                    with contextlib.suppress(Exception):
                        ack = json.loads(msg.data)
                        if "seq" in ack and "error" not in ack:
                            self.seq, self.unacked = int(ack["seq"]), None
                            return

    async def _receive(self) -> bool:
        task, w, frames = self.task, self.w, self.frames
        assert frames is not None
        while True:
            left = self._left()
            if left <= 0:
                if self.unacked is not None and not self.started:
                    await self._publish_failed(TimeoutError("no PubAck from the task stream"))
                raise _Fail(_timeout(task, w.timeout))
            # Before a worker starts the task it waits in the queue: only its deadline counts
            # (checked now and then, in case its frames were lost while we were cut off).
            if self.started:
                wait = min(left, w.idle_timeout - (time.monotonic() - self.quiet_since))
            else:
                wait = min(left, max(2.0, w.idle_timeout))
                if self.start_by is not None:
                    wait = min(wait, self.start_by - time.monotonic())
            if self.asking is not None:
                wait = min(wait, self.asking[0] - time.monotonic())
            # Published again only until a worker is heard from (it holds the task then; a copy
            # published after the de-duplication window would run twice).
            republish = self.unacked is not None and not self.started
            if republish:
                wait = min(wait, self.ack_due - time.monotonic())
            try:
                msg = await frames.get(max(0.0, wait))
            except TimeoutError:
                if republish and time.monotonic() >= self.ack_due:
                    await self._publish()  # no PubAck: lost in an outage, or the stream is away
                elif self.asking is not None:
                    if time.monotonic() >= self.asking[0]:
                        self._unanswered()
                elif self.started:
                    await self._on_quiet()
                elif self.start_by is not None and time.monotonic() >= self.start_by:
                    raise _Fail(self._not_taken()) from None
                elif w.nc.is_connected and w.nc.stats.get("reconnects", 0) != self.reconnects:
                    self.reconnects = w.nc.stats.get("reconnects", 0)
                    if not await self._still_queued():
                        await self._ask_for_final(None)
                continue
            if msg.data[:1] == b"{":  # JSON, never a frame (MessagePack maps start at 0x80)
                await self._on_pub_ack(msg.data)
                continue
            if not msg.data and msg.headers and msg.headers.get("Status"):
                if self.asking is not None:  # "no responders": no replica keeps finals, none has it
                    self._unanswered()
                elif self.unacked is not None and msg.headers.get("Status") == "503":
                    # No stream took the publish (not there, or away): publish again, paused.
                    await self._publish_failed(RuntimeError("no responders: the task stream is not available"))
                    await self._publish()
                continue
            reply = w._decode(msg, task)
            attempt = reply.attempt or 1
            if attempt < self.attempt:
                continue  # a stale attempt, already told to stop
            if attempt > self.attempt:
                if self.attempt and self.streamed:
                    raise _Fail(self._lost("the worker streaming it was replaced"))
                if self.attempt:
                    await w._cancel_remote(task, below=attempt)  # never two attempts at once
                self.attempt = attempt
            self._mark_alive()
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
            if resends(reply.error) and not self.streamed:
                self.started = False  # handed back to the queue (a replica shutting down)
                self._set_waiting(True)
                continue
            self.seq = None  # done: the worker acks it
            self._close()
            if reply.error is not None:
                reply.error.details.setdefault("attempts", self.attempt)
            task.set_outcome(reply.status or TaskStatus.WORKER_ERROR, reply.error)
            mark_end(task)
            return False

    def _mark_alive(self) -> None:
        self.asking = None
        self.quiet_since = time.monotonic()
        self.reconnects = self.w.nc.stats.get("reconnects", 0)
        if not self.started:
            self.started = True
            self.start_by = None  # a worker took it: from now on only deadline and silence count
            self._set_waiting(False)
            self._leave_window()

    async def _on_quiet(self) -> None:
        """No frame for ``idle_timeout`` from a started attempt."""
        nc = self.w.nc
        if not nc.is_connected or nc.stats.get("reconnects", 0) != self.reconnects:
            # We were cut off, not the worker: the clock restarts once we are back.
            self.reconnects = nc.stats.get("reconnects", 0)
            self.quiet_since = time.monotonic()
            return
        if time.monotonic() - self.quiet_since < self.w.idle_timeout:
            return
        self.silent_attempts += 1
        lost = None
        if self.streamed or self.silent_attempts >= self.w.max_attempts:
            lost = self._lost(f"went silent for {self.w.idle_timeout:.1f}s")
        # Presumed dead: stop it in case it is only cut off, and wait for JetStream to hand
        # the unacked task to another replica (after the queue's ack wait).
        await self.w._cancel_remote(self.task, below=self.attempt + 1)
        self.started = False
        self._set_waiting(True)
        if not await self._still_queued():
            # Acked or dropped while we could not hear it (its final frame was lost with our
            # connection, or the worker's): nothing will redeliver it. The replica that ran it
            # may have kept the frame; if none sends it, the task runs again (or, streamed, fails).
            await self._ask_for_final(lost)
        elif lost is not None:
            raise _Fail(lost)

    async def _ask_for_final(self, then: ErrorInfo | None) -> None:
        """Ask the tag's replicas for the task's final frame, kept by the one that sent it to
        our inbox (``finals``); the answer comes to that inbox, as the lost frame would have."""
        assert self.inbox is not None
        self.asking = (time.monotonic() + self.w.final_wait, then)
        subject = self.w.subjects.task_final(self.task.worker_tag, self.task.id)
        with contextlib.suppress(Exception):  # cut off again: the wait passes, then as if unanswered
            await self.w.nc.publish(subject, self.inbox.encode(), reply=self.inbox)

    def _unanswered(self) -> None:
        """No replica had the final frame: queue the task again, or fail it (streamed)."""
        assert self.asking is not None
        then, self.asking = self.asking[1], None
        if then is not None:
            raise _Fail(then)
        raise _Requeue

    async def _still_queued(self) -> bool:
        """Whether the task's message is still in the stream (waiting, or held by a worker)."""
        if self.unacked is not None:
            return True  # not known yet: its publish is made again until a PubAck names it
        if self.seq is None:
            return False
        try:
            await self.w.js.get_msg(self.w.subjects.tasks_stream, self.seq)
        except NotFoundError:
            return False
        except Exception:  # cannot tell now: assume it is, and look again later
            return True
        return True

    def _not_taken(self) -> ErrorInfo:
        """No replica took the task within its ``start_timeout``: as good as no worker."""
        tag = self.task.worker_tag
        return ErrorInfo(
            code=ErrorCode.NO_WORKER,
            message=f"no worker of tag {tag!r} took the task within {self.task.start_timeout}s",
            retryable=True,
            details={"worker_tag": tag, "reason": "not_taken", "start_timeout_s": self.task.start_timeout},
        )

    def _lost(self, why: str) -> ErrorInfo:
        tag = self.task.worker_tag
        return ErrorInfo(
            code=ErrorCode.TIMEOUT,
            message=f"worker for tag {tag!r} {why}",
            retryable=True,
            details={"worker_tag": tag, "reason": "worker_silent", "attempts": self.attempt},
        )

    def _set_waiting(self, waiting: bool) -> None:
        if waiting != self.waiting:
            self.waiting = waiting
            self.w._waiting_gauge(self.task.worker_tag).inc(1 if waiting else -1)

    def _leave_window(self) -> None:
        if self.admitted:
            self.admitted = False
            self.w.fairness.leave(self.job)

    def _finish(self, error: ErrorInfo) -> None:
        fail(self.task, error)
        mark_end(self.task)
        self.new_tokens = 0

    def _close(self) -> None:
        if self.inbox is not None:
            self.w._mux.close(self.inbox)
        self.inbox, self.frames = None, None
        self._set_waiting(False)
        self._leave_window()

    async def abandon(self) -> None:
        """The caller stops listening before the final frame: drop the task from the queue if
        no worker has taken it, and tell any worker running it to stop."""
        self._set_waiting(False)
        self._leave_window()
        self._read_pub_acks()
        if self.frames is not None:
            self._close()
            await self.w._cancel_remote(self.task)
        if self.seq is not None:
            seq, self.seq = self.seq, None
            with contextlib.suppress(Exception):  # already taken and acked, or the server is away
                await self.w.js.delete_msg(self.w.subjects.tasks_stream, seq)


def _timeout(task: Task, timeout: float) -> ErrorInfo:
    return ErrorInfo(
        code=ErrorCode.TIMEOUT,
        message=f"{task.kind} task on tag {task.worker_tag!r} did not finish within {timeout}s",
        retryable=False,
        details={"worker_tag": task.worker_tag, "reason": "deadline", "timeout_s": timeout},
    )
