"""A served task's lease: its frames (numbered, sized for the bus), its signs of life to the
caller (heartbeats; a queued task's first says "started") and to JetStream (progress), and its
deadline. One ticker keeps every lease of a host, so a task costs no timer of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from ..proto import codec, frames
from ..proto.errors import ErrorInfo
from ..proto.messages import FrameType
from ..proto.tasks import TaskStatus
from .intake import Delivery


class Lease:
    """A task being served: where its frames go and when it last showed signs of life."""

    __slots__ = (
        "deadline",
        "delivery",
        "final",
        "interval",
        "last_progress",
        "last_sent",
        "lease_lost",
        "max_payload",
        "run",
        "seq",
        "superseded",
        "task_id",
        "timed_out",
    )

    def __init__(
        self,
        delivery: Delivery,
        task_id: str,
        interval: float,
        run: asyncio.Task[Any],
        *,
        max_payload: int = 0,
        budget: float | None = None,
    ) -> None:
        self.delivery, self.task_id, self.interval, self.run = delivery, task_id, interval, run
        self.max_payload = max_payload
        self.seq = 0
        now = asyncio.get_running_loop().time()
        self.last_progress = self.last_sent = now
        self.deadline = now + budget if budget is not None else None
        self.superseded = self.lease_lost = self.timed_out = False
        self.final: bytes | None = None  # the final frame, once made

    def say_started(self, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """Scheduled (``call_soon``) as a queued task starts: runs once the worker first waits.
        A task that ended by then says "started" with its final frame, one frame fewer; one
        still running says it now (the caller's silence clock and fairness window move on)."""
        if self.seq == 0 and self.final is None:
            with contextlib.suppress(RuntimeError):  # the host is closing: its drain says the rest
                spawn(self._started())

    async def _started(self) -> None:
        if self.seq == 0 and self.final is None:
            with contextlib.suppress(Exception):  # a broken connection is the final send's to report
                await self.send(FrameType.HEARTBEAT)

    @property
    def attempt(self) -> int | None:
        return self.delivery.attempt

    async def send(self, frame: FrameType, result: dict[str, Any] | None = None) -> None:
        """A heartbeat or partial frame; a partial frame too large for the bus is skipped (the
        final one says why)."""
        data = frames.reply(self.task_id, frame, self.seq, self.delivery.attempt, result=result)
        if codec.oversize(data, self.max_payload, "a partial frame") is not None:
            return
        self.seq += 1
        self.last_sent = asyncio.get_running_loop().time()
        await self.delivery.send(data)

    async def send_final(
        self, status: TaskStatus, result: dict[str, Any] | None, error: ErrorInfo | None
    ) -> ErrorInfo | None:
        """The final frame; one too large for the bus goes out as a typed error instead,
        which is returned."""
        data, too_large = frames.final_within(
            self.task_id, self.seq, self.delivery.attempt, self.max_payload, status=status, result=result, error=error
        )
        self.seq += 1
        self.last_sent = asyncio.get_running_loop().time()
        self.final = data
        await self.delivery.send(data)
        return too_large


class Leases:
    """The running tasks of a host by id, and the one ticker that keeps them: a frame to each
    that has been quiet too long, progress to JetStream for queued ones, the end of a lease
    JetStream has given to another replica, and of a task past its deadline."""

    def __init__(self, *, tick: float, ack_wait: float, is_connected: Callable[[], bool]) -> None:
        self.tick, self.ack_wait, self.is_connected = tick, ack_wait, is_connected
        self.progress_every = max(tick, ack_wait / 4)
        self.running: dict[str, Lease] = {}

    async def keep(self, sweep: Callable[[float], None]) -> None:
        """Tick forever; ``sweep(now)`` runs first on each tick (the host's own write-offs)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            sweep(now)
            for lease in list(self.running.values()):
                await self._keep(lease, now)

    async def _keep(self, lease: Lease, now: float) -> None:
        if self.running.get(lease.task_id) is not lease:
            return  # ended while this tick was sending: its final frame is on its way
        if lease.deadline is not None and now >= lease.deadline and not lease.timed_out:
            lease.timed_out = True
            lease.run.cancel()
            return
        if lease.delivery.renews:
            if now - lease.last_progress > self.ack_wait:
                # No progress reached JetStream for a whole ack wait (NATS was gone): the task
                # has been redelivered, so this attempt stops here.
                lease.lease_lost = True
                lease.run.cancel()
                return
            if now - lease.last_progress >= self.progress_every and self.is_connected():
                with contextlib.suppress(Exception):
                    await lease.delivery.in_progress()
                    lease.last_progress = now
        if now - lease.last_sent >= lease.interval:
            # A broken connection is the task's own final send to report.
            with contextlib.suppress(Exception):
                await lease.send(FrameType.HEARTBEAT)
