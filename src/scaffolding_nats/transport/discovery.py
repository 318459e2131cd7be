"""Which workers are on the bus, and which backend models they serve.

One request on ``<prefix>.workers.models`` and every worker replica answers (no queue group),
so the asker gathers replies for a moment: until none came for ``quiet`` seconds after the
last one, at most ``window`` seconds in all. Replicas that serve different models therefore
all count, and nothing has to be configured twice.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from ..proto.subjects import Subjects

GENERATIVE_KINDS = frozenset({"generation", "streaming_generation", "chat", "streaming_chat"})
"""The task kinds a job's ``model`` reaches (it fills the sampling of every generation and chat)."""


@dataclass(frozen=True)
class WorkerInfo:
    """One replica's answer."""

    name: str
    worker: str
    tags: tuple[str, ...]
    kinds: tuple[str, ...]
    models: tuple[str, ...]

    @property
    def generative(self) -> bool:
        return bool(GENERATIVE_KINDS.intersection(self.kinds))


async def worker_infos(
    nc: Client, subjects: Subjects, *, window: float = 0.5, quiet: float = 0.1
) -> list[WorkerInfo]:
    """Every replica that answers within the window (none: an empty list)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    found: list[WorkerInfo] = []
    try:
        await nc.publish(subjects.worker_models, b"", reply=inbox)
        loop = asyncio.get_running_loop()
        end = loop.time() + window
        wait = window
        while (left := min(wait, end - loop.time())) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except (TimeoutError, NatsTimeout):
                break
            if msg.headers and msg.headers.get("Status") == "503":
                break  # no responders: no worker is subscribed at all
            info = _parse(msg.data)
            if info is not None:  # a malformed answer is not a worker's
                found.append(info)
                wait = quiet
    finally:
        await sub.unsubscribe()
    return found


def _parse(data: bytes) -> WorkerInfo | None:
    try:
        body = json.loads(data)
        return WorkerInfo(
            name=str(body.get("name", "")),
            worker=str(body.get("worker", "")),
            tags=tuple(str(t) for t in body.get("tags", ())),
            kinds=tuple(str(k) for k in body.get("kinds", ())),
            models=tuple(str(m) for m in body.get("models", ())),
        )
    except (ValueError, TypeError, AttributeError):
        return None
