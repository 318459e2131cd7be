"""One wildcard inbox subscription that fans multi-frame replies out to per-request queues.

nats-py's ``request()`` returns only the first reply; streamed and heartbeating replies need
several frames per request, so the mux keeps a bounded queue per outstanding request.
"""

from __future__ import annotations

import asyncio
import secrets

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

MAX_FRAMES_QUEUED = 1024
"""Frames kept for one request; past this the oldest (cumulative) partial frame goes."""


class ReplyMux:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = f"_INBOX.{secrets.token_hex(11)}"
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._sub: Subscription | None = None
        self.overflows = 0

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg, pending_msgs_limit=-1)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may already be closed
                pass
        self._queues.clear()

    def open(self) -> tuple[str, asyncio.Queue[Msg]]:
        token = secrets.token_hex(8)
        queue: asyncio.Queue[Msg] = asyncio.Queue(MAX_FRAMES_QUEUED)
        self._queues[token] = queue
        return f"{self._prefix}.{token}", queue

    def close(self, subject: str) -> None:
        self._queues.pop(subject.rsplit(".", 1)[-1], None)

    async def _on_msg(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is None:
            return  # a late frame of a request that already ended (e.g. after cancel)
        if queue.full():
            # Partial frames are cumulative, so the oldest one is safe to drop; the final
            # frame is always the newest and is never the one dropped.
            queue.get_nowait()
            self.overflows += 1
        queue.put_nowait(msg)
