"""EventFollower: one job's events, each exactly once and in ``seq`` order, across reconnects.

Events arrive live on ``<prefix>.events.<id>`` (core NATS, cheap). A core subscription misses
what is published while the client is disconnected, so the follower also reads the events
stream, where every event is kept: from the start when replaying, and again whenever the live
feed may have missed something (the connection was re-established, a ``seq`` was skipped, or
nothing came for ``resync`` seconds). Both paths feed one buffer, de-duplicated by ``seq``.

An event published but never stored (a plain publish while the stream had no leader) cannot be
replayed: once the stream holds a later event but not that one, the follower skips the gap
(logged) rather than wait for it. The terminal event is always stored (confirmed by JetStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from ..errors import DeadlineExceeded, ProtocolError
from ..proto import codec
from ..proto.messages import JobEvent
from ..proto.subjects import Subjects
from .events import TERMINAL

log = logging.getLogger(__name__)


class EventFollower:
    """Use as an async context manager: subscribed on entry (so a job submitted inside loses no
    event), then iterate ``events()``. ``after_seq``: the last seq already seen (-1: none);
    ``replay``: read what the stream holds before waiting for live events."""

    def __init__(
        self,
        nc: Client,
        job_id: str,
        *,
        subjects: Subjects | None = None,
        owner: str | None = None,
        after_seq: int = -1,
        replay: bool = False,
        resync: float = 5.0,
        read_stream: bool = True,
    ) -> None:
        self.nc = nc
        self.job_id = job_id
        self.subjects = subjects or Subjects()
        self.subject = self.subjects.events(job_id, owner)
        self.read_stream = read_stream  # a role that may not read the stream follows live only
        self.next_seq = after_seq + 1
        self.resync = resync
        self.resyncs = 0  # how often the stream was read (for tests and logs)
        self._need_sync = replay or after_seq >= 0
        self._cursor = 1  # the stream sequence the next read of the stream starts at
        self._stored_max = -1  # the highest seq read from the stream
        self._synced_at = time.monotonic()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._held: dict[int, JobEvent] = {}
        self._sub: Subscription | None = None
        self._reconnects = 0

    async def __aenter__(self) -> EventFollower:
        self._reconnects = self.nc.stats["reconnects"]
        self._sub = await self.nc.subscribe(self.subject, cb=self._queue.put)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # a closed connection has dropped it already
                await sub.unsubscribe()

    async def events(self, *, timeout: float = 600.0, idle_timeout: float | None = None) -> AsyncIterator[JobEvent]:
        """Yield events from ``after_seq + 1`` on, until the result or error. ``timeout`` bounds
        the whole wait; ``idle_timeout`` the wait for the next event."""
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while True:
            if self._need_sync:
                await self._sync()
            while self.next_seq in self._held:
                event = self._held.pop(self.next_seq)
                self.next_seq += 1
                idle_since = time.monotonic()
                yield event
                if event.type in TERMINAL:
                    return
            now = time.monotonic()
            if now >= deadline:
                raise DeadlineExceeded(
                    f"job {self.job_id} gave no result within {timeout}s", details={"job_id": self.job_id}
                )
            if idle_timeout is not None and now - idle_since >= idle_timeout:
                raise DeadlineExceeded(
                    f"job {self.job_id} sent no event within {idle_timeout:.1f}s", details={"job_id": self.job_id}
                )
            # Wake at least every 0.5 s: a reconnect shows only in the client's counter.
            wait = min(deadline - now, 0.5)
            if idle_timeout is not None:
                wait = min(wait, idle_since + idle_timeout - now)
            try:
                msg = await asyncio.wait_for(self._queue.get(), max(wait, 0.0))
            except TimeoutError:
                if time.monotonic() - max(idle_since, self._synced_at) >= self.resync:
                    self._need_sync = True  # quiet: check the stream for anything the feed lost
            else:
                self._take(msg.data)
                if self._held and min(self._held) > self.next_seq:
                    self._need_sync = True  # a seq was skipped: the live feed lost some
            if self.nc.stats["reconnects"] != self._reconnects:
                self._need_sync = True

    def _take(self, data: bytes | None) -> JobEvent | None:
        try:
            event = codec.decode(JobEvent, data or b"")
        except ProtocolError:
            return None  # not ours to interpret; the contract says events are JobEvents
        if event.job_id != self.job_id:
            return None
        if event.seq >= self.next_seq:
            self._held.setdefault(event.seq, event)
        return event

    async def _sync(self) -> None:
        """Read the job's events kept in the stream since the last read. A failure (still
        reconnecting) leaves the flag set: the next turn tries again."""
        self._reconnects = self.nc.stats["reconnects"]
        self._synced_at = time.monotonic()
        if not self.read_stream:
            self._need_sync = False
            return
        js = self.nc.jetstream(timeout=2.0)
        subject = self.subject
        self.resyncs += 1
        try:
            while True:
                try:
                    raw = await js.get_msg(self.subjects.events_stream, seq=self._cursor, subject=subject, next=True)
                except NotFoundError:
                    break
                self._cursor = (raw.seq or self._cursor) + 1
                event = self._take(raw.data)
                if event is not None:
                    self._stored_max = max(self._stored_max, event.seq)
        except Exception as exc:
            if "permissions violation" in str(self.nc.last_error or "").lower():
                log.warning("job %s: this NATS user may not read the events stream; following live only", self.job_id)
                self.read_stream, self._need_sync = False, False
                return
            log.debug("reading the events of job %s from the stream failed: %s", self.job_id, exc)
            return
        self._need_sync = False
        if self.next_seq not in self._held and self._stored_max > self.next_seq:
            # The stream holds a later event but not this one: it was never stored, and never will be.
            resume = min(seq for seq in self._held if seq > self.next_seq)
            log.warning("job %s: events %d..%d were lost, not stored", self.job_id, self.next_seq, resume - 1)
            self.next_seq = resume
