"""JobClient: submit jobs and follow their events over NATS (the gateway is one user of it).

Submitting goes through JetStream, so a job published while no controller runs is kept and
run when one starts. Events are live on ``<prefix>.events.<id>`` and also kept in a stream,
so a client that subscribes late (or reconnects) can replay them from the start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy

from .errors import DeadlineExceeded, ProtocolError, ScaffoldingError
from .proto import codec
from .proto.errors import ErrorCode, ErrorInfo, NoController
from .proto.messages import Job, JobEvent, JobEventType, JobRecord, JobResult, JobState
from .proto.subjects import HEADER_MSG_ID, Subjects
from .telemetry import inject_headers

_TERMINAL = (JobEventType.RESULT, JobEventType.ERROR)


class JobClient:
    def __init__(self, nc: Client, *, subjects: Subjects | None = None) -> None:
        self.nc = nc
        self.subjects = subjects or Subjects()
        self.js = nc.jetstream()

    async def submit(self, job: Job) -> None:
        """Store the job durably (de-duplicated by its id for two minutes)."""
        headers = inject_headers({HEADER_MSG_ID: job.id}) or {}
        data = codec.encode(job)
        limit = self.nc.max_payload
        if limit and len(data) > limit:
            raise ProtocolError(
                f"job of {len(data)} bytes exceeds the server's max_payload of {limit}",
                code=ErrorCode.PAYLOAD_TOO_LARGE,
                details={"size": len(data), "limit": limit},
            )
        await self.js.publish(self.subjects.jobs(job.method), data, headers=headers)

    async def events(
        self, job: Job, *, timeout: float = 600.0, idle_timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """Submit ``job`` and yield its events until the result or error (or a deadline)."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        sub = await self.nc.subscribe(self.subjects.events(job.id), cb=queue.put)
        try:
            await self.submit(job)
            async for event in _read(queue, timeout, idle_timeout, job.id):
                yield event
        finally:
            await sub.unsubscribe()

    async def run(self, job: Job, *, timeout: float = 600.0) -> JobResult:
        """Submit and wait: the result, or the job's typed error raised."""
        async for event in self.events(job, timeout=timeout):
            if event.type is JobEventType.RESULT and event.result is not None:
                return event.result
            if event.type is JobEventType.ERROR and event.error is not None:
                raise ScaffoldingError.from_info(event.error)
        raise DeadlineExceeded(f"job {job.id} ended without a result")  # pragma: no cover

    async def replay(self, job_id: str, *, timeout: float = 600.0) -> AsyncIterator[JobEvent]:
        """Every event of a job from the first, then live ones, until it ends."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        sub = await self.js.subscribe(
            self.subjects.events(job_id),
            cb=queue.put,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            stream=self.subjects.events_stream,
        )
        try:
            async for event in _read(queue, timeout, None, job_id):
                yield event
        finally:
            await sub.unsubscribe()

    async def record(self, job_id: str) -> JobRecord | None:
        from .transport.jetstream import results_bucket

        kv = await results_bucket(self.js, self.subjects)
        try:
            entry = await kv.get(job_id)
        except Exception:  # KeyNotFoundError, or deleted by TTL
            return None
        return codec.decode(JobRecord, entry.value) if entry.value else None

    async def cancel(self, job_id: str) -> None:
        """Stop a running job (its controller hears the cancel) or a queued one, even while no
        controller runs: a ``cancelled`` record, written only where the job has none yet, makes
        whichever controller takes it later end it at once without running it."""
        from .transport.jetstream import results_bucket

        await self.nc.publish(self.subjects.cancel_job(job_id), b"")
        error = ErrorInfo(code=ErrorCode.CANCELLED, message="job cancelled by the client before it started")
        record = JobRecord(job_id=job_id, method="?", state=JobState.FAILED, error=error)
        try:
            kv = await results_bucket(self.js, self.subjects)
            await kv.create(job_id, codec.encode(record))
        except Exception:  # a record exists: the job runs or ran, and the published cancel is what counts
            pass

    async def methods(self, *, timeout: float = 1.0) -> list[str]:
        """The methods a controller serves; ``NoController`` if none answers."""
        try:
            msg = await self.nc.request(self.subjects.controller_methods, b"", timeout=timeout)
        except (TimeoutError, NoRespondersError, NatsTimeout):
            raise NoController("no controller service is answering on this NATS deployment") from None
        return list(json.loads(msg.data)["methods"])


async def _read(
    queue: asyncio.Queue[Msg], timeout: float, idle_timeout: float | None, job_id: str
) -> AsyncIterator[JobEvent]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        wait = left if idle_timeout is None else min(left, idle_timeout)
        if wait <= 0:
            raise DeadlineExceeded(f"job {job_id} gave no result within {timeout}s", details={"job_id": job_id})
        try:
            msg = await asyncio.wait_for(queue.get(), wait)
        except TimeoutError:
            raise DeadlineExceeded(
                f"job {job_id} sent no event within {wait:.1f}s", details={"job_id": job_id}
            ) from None
        try:
            event = codec.decode(JobEvent, msg.data)
        except ProtocolError:
            continue  # not ours to interpret; the contract says events are JobEvents
        yield event
        if event.type in _TERMINAL:
            return
