"""Pull only what fits: a worker replica asks its tag's JetStream consumer for exactly as many
tasks as it has free slots, so a busy replica takes nothing and queued tasks wait in the stream
for whichever replica frees a slot first.

Each pull request (``{"batch": n, "expires": ns}`` to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.
<consumer>``) reserves ``n`` slots as credit until its messages arrive or it ends (status 408/409,
or its expiry passes without word, e.g. across a server restart). A message that arrives for a
request already written off runs if a slot is free and is otherwise handed back (``nak``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)


class Slots:
    """A replica's capacity, shared by its tags: tasks running plus slots promised to pulls."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.running = 0
        self.credit = 0
        self._changed = asyncio.Event()

    def free(self) -> int:
        return self.capacity - self.running - self.credit

    def changed(self) -> None:
        self._changed.set()

    async def wait_free(self) -> None:
        while self.free() <= 0:
            self._changed.clear()
            await self._changed.wait()


class _Pull:
    __slots__ = ("deadline", "left")

    def __init__(self, left: int, deadline: float) -> None:
        self.left, self.deadline = left, deadline


class Puller:
    """Keeps pull requests outstanding for one tag's consumer; ``on_task`` gets each message
    with one slot already counted as running (the caller frees it with ``done()``)."""

    def __init__(
        self,
        nc: Client,
        *,
        api_subject: str,
        slots: Slots,
        on_task: Callable[[Msg], None],
        share: Callable[[], int],
        expires: float = 5.0,
    ) -> None:
        self.nc, self.api_subject, self.slots = nc, api_subject, slots
        self.on_task, self.share, self.expires = on_task, share, expires
        self._inbox = nc.new_inbox()  # under the connection's (the user's private) inbox prefix
        self._cut = len(self._inbox) + 1
        self._pulls: dict[str, _Pull] = {}
        self._sub: Subscription | None = None
        self._backoff = 0.0
        self._refill = max(1, slots.capacity // 4)

    async def run(self) -> None:
        """Pull whenever slots are free, until cancelled."""
        loop = asyncio.get_running_loop()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_msg, pending_msgs_limit=-1)
        try:
            while True:
                await self.slots.wait_free()
                if self._backoff:
                    delay, self._backoff = self._backoff, 0.0
                    await asyncio.sleep(delay)
                    continue
                if not self.nc.is_connected:  # a pull sent now would be lost; wait for the link
                    await asyncio.sleep(0.1)
                    continue
                n = min(self.slots.free(), max(1, self.share()))
                if n <= 0:
                    continue
                if self._pulls and n < self._refill:
                    # Pulls are still outstanding: top them up in batches, not one slot at a
                    # time (a pull per finished task would cost the server a request and an
                    # expiry status each).
                    self.slots._changed.clear()
                    await self.slots._changed.wait()
                    continue
                token = secrets.token_hex(6)
                self._pulls[token] = _Pull(n, loop.time() + self.expires + 1.0)
                self.slots.credit += n
                body = json.dumps({"batch": n, "expires": int(self.expires * 1e9)}).encode()
                try:
                    await self.nc.publish(self.api_subject, body, reply=f"{self._inbox}.{token}")
                except Exception as exc:  # disconnected: give the credit back and try again
                    log.debug("pull request failed: %r", exc)
                    self._end(token)
                    await asyncio.sleep(0.2)
        finally:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            for token in list(self._pulls):
                self._end(token)

    def sweep(self, now: float) -> None:
        """Write off pulls whose expiry passed with no word from the server."""
        for token in [t for t, p in self._pulls.items() if p.deadline <= now]:
            self._end(token)

    def _end(self, token: str) -> None:
        pull = self._pulls.pop(token, None)
        if pull is not None and pull.left:
            self.slots.credit -= pull.left
            self.slots.changed()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is not None and not msg.data:
            if status == "100":  # idle heartbeat
                return
            # 404/408: nothing (more) for this pull; 409: e.g. the consumer was deleted or has
            # too many waiting pulls, so back off a little before asking again.
            if msg.subject.startswith(self._inbox):
                self._end(msg.subject[self._cut :])
            if status == "409":
                self._backoff = 0.5
                log.warning("pull refused by the server: %s", headers.get("Description", status))
            return
        token = next((t for t, p in self._pulls.items() if p.left > 0), None)
        if token is not None:
            pull = self._pulls[token]
            pull.left -= 1
            self.slots.credit -= 1
            if pull.left == 0:
                del self._pulls[token]
        if (token is None and self.slots.free() <= 0) or self.slots.running >= self.slots.capacity:
            # No room (a late delivery, or direct requests took the slots it was pulled for):
            # straight back to the queue for another replica.
            with contextlib.suppress(Exception):
                await msg.nak()
            self.slots.changed()
            return
        self.slots.running += 1
        self.on_task(msg)

    def done(self) -> None:
        self.slots.running -= 1
        self.slots.changed()
