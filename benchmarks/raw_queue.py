"""The raw NATS primitive under the task queue, for P1's baseline: publish to a JetStream
work-queue stream (waiting for the store's ack), a worker pulling with plain pull requests,
answering on core NATS to an inbox named in a header, and acking. No framing, no heartbeats,
no slots, no retries: what any design on this primitive pays at least."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

REPLY = "Raw-Reply-To"


def _names(prefix: str) -> tuple[str, str, str]:
    return f"{prefix.upper()}_RAWQ", f"{prefix}.rawq", "RAW"


async def serve_raw_queue(nc: Client, prefix: str, *, window: int = 1024) -> asyncio.Task[None]:
    """Answer every queued message with its own body; keeps ``window`` messages requested."""
    stream, subject, consumer = _names(prefix)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(stream)
    await js.add_stream(
        StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE)
    )
    await js.add_consumer(stream, ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    inbox = f"_INBOX.{secrets.token_hex(8)}"
    owed = 0
    low = asyncio.Event()
    low.set()

    async def on_msg(msg: Msg) -> None:
        nonlocal owed
        headers = msg.headers or {}
        if "Status" in headers and not msg.data:
            owed = 0  # the pull request ended (expired): ask again
            low.set()
            return
        owed -= 1
        if owed < window // 2:
            low.set()
        await nc.publish(headers[REPLY], msg.data)
        await nc.publish(msg.reply, b"+ACK")

    await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=-1)

    async def pull() -> None:
        nonlocal owed
        while True:
            await low.wait()
            low.clear()
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps({"batch": window - owed, "expires": 5_000_000_000}).encode(),
                reply=inbox,
            )
            owed = window

    return asyncio.create_task(pull())


class RawQueueClient:
    def __init__(self, nc: Client, prefix: str) -> None:
        self.nc, self.js = nc, nc.jetstream()
        _, self.subject, _ = _names(prefix)
        self.inbox = f"_INBOX.{secrets.token_hex(8)}"
        self.waiting: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        async def on_reply(msg: Msg) -> None:
            fut = self.waiting.pop(msg.subject, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.data)

        await self.nc.subscribe(f"{self.inbox}.*", cb=on_reply, pending_msgs_limit=-1)

    async def call(self, payload: bytes, timeout: float = 5.0) -> bytes:
        reply = f"{self.inbox}.{secrets.token_hex(6)}"
        fut = self.waiting[reply] = asyncio.get_running_loop().create_future()
        await self.js.publish(self.subject, payload, headers={REPLY: reply})
        return await asyncio.wait_for(fut, timeout)
