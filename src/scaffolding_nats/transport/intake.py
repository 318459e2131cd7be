"""Where a served task came from, and how it is answered: a direct micro request or a
message pulled from the tag's JetStream work queue. The serving code talks to a ``Delivery``
and never asks which kind it holds."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.micro.request import Request

from .. import metrics
from ..proto import codec
from ..proto.errors import ErrorCode, ErrorInfo
from ..proto.subjects import HEADER_ATTEMPTS_BELOW, HEADER_REPLY_TO
from .finals import ask_peers

if TYPE_CHECKING:
    from .host import WorkerHost

log = logging.getLogger(__name__)

_CANCELS_REMEMBERED = 10_000  # task ids cancelled before a replica took them (dropped on arrival)


class Delivery:
    """A direct request: frames go to its reply subject, there is nothing to ack, and the
    task is not redelivered (``renews`` False)."""

    __slots__ = ("_respond", "attempt")

    renews = False  # whether the task holds a JetStream lease (progress, ack, redelivery)

    def __init__(self, respond: Callable[..., Awaitable[None]]) -> None:
        self._respond = respond
        self.attempt: int | None = None  # a queued task's delivery count

    @classmethod
    def direct(cls, req: Request) -> Delivery:
        return cls(req.respond)

    @property
    def reply_to(self) -> str | None:
        """Where a queued task's frames go (its final frame is kept under it, see ``finals``)."""
        return None

    async def send(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self._respond(data, headers=headers)

    async def refuse(self) -> None:
        """A task that cannot run (bad request, crash): never delivered again."""

    async def done(self) -> None:
        """Its final frame is out."""

    async def hand_back(self) -> None:
        """Back to the queue for another replica (this one shuts down)."""

    async def in_progress(self) -> None:
        """Renew the lease."""


class Queued(Delivery):
    """A task pulled from the work queue: frames go to the ``Reply-To`` header's inbox on core
    NATS; the message is acked after the final frame, or termed, or nak'ed."""

    __slots__ = ("_reply_to", "msg")

    renews = True

    def __init__(self, msg: Msg, reply_to: str, publish: Callable[..., Awaitable[None]]) -> None:
        super().__init__(publish)
        self.msg, self._reply_to = msg, reply_to
        self.attempt = msg.metadata.num_delivered

    @property
    def reply_to(self) -> str | None:
        return self._reply_to

    def redelivered(self, msg: Msg) -> None:
        """The same task delivered again to this replica (its lease lapsed): keep one run."""
        self.msg, self.attempt = msg, msg.metadata.num_delivered

    async def send(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self._respond(self._reply_to, data, headers=headers)

    async def refuse(self) -> None:
        with contextlib.suppress(Exception):
            await self.msg.term()

    async def done(self) -> None:
        with contextlib.suppress(Exception):  # unacked, it is redelivered: the caller ignores a stale attempt
            await self.msg.ack()

    async def hand_back(self) -> None:
        with contextlib.suppress(Exception):
            await self.msg.nak()

    async def in_progress(self) -> None:
        await self.msg.in_progress()


class Intake:
    """The host's two ways in: ``on_request`` for direct micro requests (refused at once when
    no slot is free; micro handlers are awaited one at a time, so this stays fast) and
    ``on_pulled`` for messages its pullers took from the work queue, each first admitted:
    answered from a kept final frame, dropped when cancelled while queued, or joined to the
    run of the same task already here."""

    def __init__(self, host: WorkerHost) -> None:
        self.host = host
        self.cancelled_early: OrderedDict[str, float] = OrderedDict()  # cancelled before they came

    def forget_cancels(self, before: float) -> None:
        while self.cancelled_early and next(iter(self.cancelled_early.values())) < before:
            self.cancelled_early.popitem(last=False)

    async def on_request(self, req: Request) -> None:
        """A direct request (not queued): runs in a free slot or is refused at once."""
        tag = req.subject.rsplit(".", 1)[-1]
        if self.host.slots.running >= self.host.max_concurrency:  # promised-but-unfilled pulls yield to it
            self.host.stats.rejected += 1
            metrics.TASKS_REJECTED.labels(tag, ErrorCode.AT_CAPACITY.value).inc()
            error = ErrorInfo(
                code=ErrorCode.AT_CAPACITY,
                message=f"worker replica at capacity ({self.host.max_concurrency} tasks in flight)",
                retryable=True,
                details={"capacity": self.host.max_concurrency},
            )
            await self.host.reply_error(Delivery.direct(req), tag, "", error)
            return
        self.host.slots.running += 1
        self.host.stats.in_flight += 1
        self.host.spawn(self._serve_direct(tag, req))

    def on_pulled(self, tag: str, msg: Msg) -> None:
        self.host.stats.in_flight += 1
        self.host.spawn(self._serve_queued(tag, msg))

    async def _serve_direct(self, tag: str, req: Request) -> None:
        try:
            await self.host.serve(tag, req.data, req.headers, Delivery.direct(req))
        finally:
            self.host.stats.in_flight -= 1
            self.host.slots.running -= 1
            self.host.slots.changed()

    async def _serve_queued(self, tag: str, msg: Msg) -> None:
        try:
            delivery = await self._admit(tag, msg)
            if delivery is not None:
                await self.host.serve(tag, msg.data, msg.headers, delivery)
        except Exception:
            log.exception("worker host failed taking a queued task")
        finally:
            self.host.stats.in_flight -= 1
            self.host.pullers[tag].done()

    async def _admit(self, tag: str, msg: Msg) -> Queued | None:
        """A pulled task to run, or None when it is answered without running (kept final
        frame, cancelled while queued, already running here) or dropped (no reply subject)."""
        reply_to = msg.headers.get(HEADER_REPLY_TO) if msg.headers else None
        if not reply_to:
            self.host.stats.bad_requests += 1
            log.warning("a queued task on %s has no %s header: dropped", msg.subject, HEADER_REPLY_TO)
            await msg.term()
            return None
        attempt = msg.metadata.num_delivered
        if await self._replayed(msg, reply_to, None):  # finished here; only its final frame was lost
            return None
        if self.cancelled_early or attempt > 1:  # (the id costs a decode: only when it matters)
            task_id = codec.peek_id(msg.data, "task", "id") or ""
            if self.cancelled_early.pop(task_id, None) is not None:
                self.host.stats.cancelled += 1
                await msg.term()  # cancelled while it waited in the queue: never run it
                return None
            lease = self.host.leases.running.get(task_id)
            if lease is not None and isinstance(lease.delivery, Queued):
                lease.delivery.redelivered(msg)  # its lease lapsed but it runs here: keep one run
                return None
            if attempt > 1 and task_id:
                # Finished by a peer whose ack came too late? Its kept final frame answers it.
                subject = self.host.subjects.task_final(tag, task_id)
                kept = await ask_peers(self.host.nc, subject, reply_to, self.host.final_lookup_wait)
                if await self._replayed(msg, reply_to, kept):
                    return None
        if attempt > 1:
            self.host.stats.redelivered += 1
        return Queued(msg, reply_to, self.host.nc.publish)

    async def _replayed(self, msg: Msg, reply_to: str, frame: bytes | None) -> bool:
        """Answer a queued task with a final frame already made for its request (``frame``, or
        the one kept here) and ack it: it is not run again."""
        frame = frame or self.host.finals.get(reply_to)
        if frame is None:
            return False
        self.host.stats.replayed += 1
        with contextlib.suppress(Exception):  # lost again: the caller asks for it (finals)
            await self.host.nc.publish(reply_to, frame)
        with contextlib.suppress(Exception):
            await msg.ack()
        return True

    async def on_cancel(self, msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        below = msg.headers.get(HEADER_ATTEMPTS_BELOW) if msg.headers else None
        running = self.host.leases.running.get(task_id)
        if below is not None:
            # The caller moved on to a newer attempt: stop an older one here, silently (its
            # lease is given up; the queue already handed the task to the newer attempt).
            if running is not None and running.attempt is not None and running.attempt < int(below):
                running.superseded = True
                running.run.cancel()
            return
        if running is None:
            # Not here (yet): if it is still queued and reaches this replica, drop it unrun.
            self.cancelled_early[task_id] = time.monotonic()
            while len(self.cancelled_early) > _CANCELS_REMEMBERED:
                self.cancelled_early.popitem(last=False)
        elif task_id not in self.host.cancel_requested:
            self.host.stats.cancelled += 1
            self.host.cancel_requested.add(task_id)
            running.run.cancel()
