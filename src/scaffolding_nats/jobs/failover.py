"""What lets a job survive a NATS outage or its controller's death.

* Writes that must land (the job's record, its terminal event) are retried until a deadline,
  so a reconnect in progress delays them instead of losing them.
* A redelivered job is taken over only when its owner is gone: the owner answers on
  ``<prefix>.controllers.owner.<job key>`` while it runs the job (after an outage JetStream may
  redeliver a job whose controller is alive and still working on it).
* A takeover continues the job's event ``seq`` after the last event in the events stream, and a
  job whose terminal event is already there (it finished, but its ack was lost) is only acked.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from ..errors import DeadlineExceeded, ProtocolError
from ..proto import codec
from ..proto.messages import JobEvent
from ..proto.subjects import Subjects

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retrying(op: Callable[[], Awaitable[T]], *, what: str, deadline: float = 120.0) -> T:
    """``op()`` until it succeeds or ``deadline`` seconds pass (then DeadlineExceeded, carrying
    the last error). For idempotent writes only: an attempt that timed out may have landed."""
    end = time.monotonic() + deadline
    pause = 0.1
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            left = end - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(
                    f"{what} failed for {deadline:.0f}s: {exc}", details={"what": what, "last_error": repr(exc)}
                ) from exc
            log.info("%s failed (%s); retrying", what, exc)
            await asyncio.sleep(min(left, pause * (0.5 + random.random())))
            pause = min(2.0, pause * 2)


async def owner_alive(
    nc: Client, subjects: Subjects, job_id: str, owner: str | None, *, tries: int = 3, wait: float = 0.5
) -> bool:
    """Whether a controller still runs the owner's job ``job_id``. Asked ``tries`` times ``wait`` apart, so an
    owner that is itself still reconnecting after an outage gets time to answer."""
    for attempt in range(tries):
        try:
            await nc.request(subjects.controller_owner(job_id, owner), b"", timeout=wait)
            return True
        except NoRespondersError:
            if attempt + 1 < tries:
                await asyncio.sleep(wait)
        except (TimeoutError, NatsTimeout):
            pass
    return False


async def last_event(nc: Client, subjects: Subjects, subject: str) -> JobEvent | None:
    """The newest event on a job's events ``subject`` kept in the events stream, or None."""
    js = nc.jetstream()

    async def get() -> JobEvent | None:
        try:
            raw = await js.get_last_msg(subjects.events_stream, subject)
        except NotFoundError:
            return None
        try:
            return codec.decode(JobEvent, raw.data or b"")
        except ProtocolError:
            return None

    return await retrying(get, what=f"reading the last event on {subject}")
