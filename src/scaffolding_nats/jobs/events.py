"""A job's event stream: numbered without gaps, published in order, partial text coalesced.

The runtime reports events synchronously (from inside controller generators); this buffer
takes them at once and one coroutine publishes them in order, so no publish is ever left
running unowned.

The terminal event (result or error) is stored through JetStream, confirmed and retried until
a deadline (de-duplicated by ``<job key>.<seq>``), so a follower that lost its connection can
always replay it; the others are plain publishes, captured by the events stream too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.client import Client

from ..errors import ProtocolError
from ..proto import codec
from ..proto.errors import ErrorInfo
from ..proto.messages import JobEvent, JobEventType, JobResult
from ..proto.subjects import HEADER_MSG_ID
from .failover import retrying

log = logging.getLogger(__name__)

TERMINAL = (JobEventType.RESULT, JobEventType.ERROR)
"""The events that end a job: each job has exactly one, its last (``JobStore`` exports it)."""


class EventStream:
    def __init__(
        self,
        nc: Client,
        subject: str,
        job_id: str,
        *,
        key: str | None = None,
        partials: bool = True,
        start_seq: int = 0,
    ) -> None:
        self.nc, self.subject, self.job_id = nc, subject, job_id
        self.key = key or job_id  # the job's key (``<owner>.<id>``): its events' de-duplication ids
        self.partials = partials  # the job's ``stream`` flag: whether to send partial text
        self.seq = start_seq  # > 0 when continuing a job another controller started
        self._pending: list[tuple[JobEventType, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._closed = False

    def add(self, kind: JobEventType, **fields: Any) -> None:
        if self._pending and kind is JobEventType.PARTIAL and self._pending[-1][0] is JobEventType.PARTIAL:
            self._pending[-1][1]["text"] += fields.get("text", "")
        else:
            self._pending.append((kind, fields))
        self._wake.set()

    def from_runtime(self, event_type: str, payload: dict[str, Any]) -> None:
        """The runtime's event sink: partial text and method progress."""
        if event_type == "partial":
            if not self.partials:
                return
            self.add(JobEventType.PARTIAL, text=str(payload.get("text", "")))
        elif event_type == "progress":
            self.add(JobEventType.PROGRESS, progress=dict(payload))

    async def pump(self) -> None:
        """Publish events as they come until ``close()``, then flush what is left."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            if self._closed:
                return

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        for kind, fields in batch:
            event = JobEvent(job_id=self.job_id, seq=self.seq, type=kind, **fields)
            self.seq += 1
            data = self._encode(event)
            if kind in TERMINAL:
                await self._store(data, event.seq)
                continue
            try:
                await self.nc.publish(self.subject, data)
            except Exception as exc:  # e.g. the reconnect buffer is full; followers resync
                log.warning("event %d of job %s not published: %s", event.seq, self.job_id, exc)

    async def _store(self, data: bytes, seq: int) -> None:
        js = self.nc.jetstream()
        headers = {HEADER_MSG_ID: f"{self.key}.{seq}"}
        try:
            await retrying(
                lambda: js.publish(self.subject, data, headers=headers, timeout=2.0),
                what=f"storing the outcome of job {self.job_id}",
            )
        except Exception as exc:  # the record still has the outcome
            log.error("%s", exc)

    def _encode(self, event: JobEvent) -> bytes:
        """An event the bus cannot carry (over ``max_payload``, or not encodable) becomes a
        typed error event in its place, so the client still hears how the job ended."""
        try:
            data = codec.encode(event)
            too_large = codec.oversize(data, self.nc.max_payload, f"the job's {event.type.value} event")
            if too_large is None:
                return data
            error = too_large
        except ProtocolError as exc:
            error = exc.to_info()
        return codec.encode(JobEvent(job_id=self.job_id, seq=event.seq, type=JobEventType.ERROR, error=error))

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def end(self) -> None:
        """Close, and publish what is queued (for a stream whose ``pump`` no task runs)."""
        self.close()
        await self.pump()

    def result(self, result: JobResult) -> None:
        self.add(JobEventType.RESULT, result=result)

    def error(self, error: ErrorInfo) -> None:
        self.add(JobEventType.ERROR, error=error)
