"""One wildcard inbox subscription that fans multi-frame replies out to per-request queues.

nats-py's ``request()`` returns only the first reply; streamed and heartbeating replies need
several frames per request, so the mux keeps a small frame queue per outstanding request.
A queue is a deque plus one waiter future: no task per wait, which matters at 10k tasks/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

MAX_FRAMES_QUEUED = 1024
"""Frames kept for one request; past this the oldest (cumulative) partial frame goes."""


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FrameQueue:
    __slots__ = ("dropped", "items", "waiter")

    def __init__(self) -> None:
        self.items: deque[Msg] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def push(self, msg: Msg) -> None:
        if len(self.items) >= MAX_FRAMES_QUEUED:
            # Partial frames are cumulative, so the oldest is safe to drop; the final frame
            # is always the newest and is never the one dropped.
            self.items.popleft()
            self.dropped += 1
        self.items.append(msg)
        if self.waiter is not None:
            _wake(self.waiter)

    async def get(self, timeout: float) -> Msg:
        """The next frame; ``TimeoutError`` if none arrives within ``timeout`` seconds."""
        if not self.items:
            loop = asyncio.get_running_loop()
            fut = self.waiter = loop.create_future()
            handle = loop.call_later(timeout, _wake, fut)
            try:
                await fut
            finally:
                handle.cancel()
                self.waiter = None
            if not self.items:
                raise TimeoutError
        return self.items.popleft()


class ReplyMux:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        # Under the connection's inbox prefix: with auth on, the user's private one.
        self._prefix = nc.new_inbox()
        self._cut = len(self._prefix) + 1
        self._queues: dict[str, FrameQueue] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg, pending_msgs_limit=-1)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # the connection may already be closed
                await sub.unsubscribe()
        self._queues.clear()

    def open(self) -> tuple[str, FrameQueue]:
        token = secrets.token_hex(8)
        queue = self._queues[token] = FrameQueue()
        return f"{self._prefix}.{token}", queue

    def close(self, subject: str) -> None:
        self._queues.pop(subject[self._cut :], None)

    async def _on_msg(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject[self._cut :])
        if queue is not None:  # else: a late frame of a request that already ended
            queue.push(msg)
