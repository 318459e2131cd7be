"""JobClient: submit jobs and follow their events over NATS (the gateway is one user of it).

Submitting goes through JetStream, so a job published while no controller runs is kept and
run when one starts. Events are live on ``<prefix>.events.<id>`` and also kept in a stream, so
a client that subscribes late replays them from the start, and one that reconnects resumes
after the last seq it saw (``EventFollower``): no terminal event is missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from .errors import DeadlineExceeded, ScaffoldingError
from .follow import EventFollower
from .proto import codec
from .proto.errors import ErrorCode
from .proto.messages import Job, JobEvent, JobEventType, JobRecord, JobResult
from .proto.subjects import HEADER_MSG_ID, Subjects
from .telemetry import inject_headers

_TERMINAL = (JobEventType.RESULT, JobEventType.ERROR)


class NoController(ScaffoldingError):
    code = ErrorCode.NO_CONTROLLER


class JobClient:
    def __init__(self, nc: Client, *, subjects: Subjects | None = None) -> None:
        self.nc = nc
        self.subjects = subjects or Subjects()
        self.js = nc.jetstream()

    async def submit(self, job: Job) -> None:
        """Store the job durably (de-duplicated by its id for two minutes)."""
        headers = inject_headers({HEADER_MSG_ID: job.id}) or {}
        await self.js.publish(self.subjects.jobs(job.method), codec.encode(job), headers=headers)

    async def events(
        self, job: Job, *, timeout: float = 600.0, idle_timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """Submit ``job`` and yield its events until the result or error (or a deadline)."""
        async with EventFollower(self.nc, job.id, subjects=self.subjects) as follower:
            await self.submit(job)
            async for event in follower.events(timeout=timeout, idle_timeout=idle_timeout):
                yield event

    async def run(self, job: Job, *, timeout: float = 600.0) -> JobResult:
        """Submit and wait: the result, or the job's typed error raised."""
        async for event in self.events(job, timeout=timeout):
            if event.type is JobEventType.RESULT and event.result is not None:
                return event.result
            if event.type is JobEventType.ERROR and event.error is not None:
                raise ScaffoldingError.from_info(event.error)
        raise DeadlineExceeded(f"job {job.id} ended without a result")  # pragma: no cover

    async def replay(self, job_id: str, *, after_seq: int = -1, timeout: float = 600.0) -> AsyncIterator[JobEvent]:
        """Every event of a job after ``after_seq`` (all by default) from the events stream,
        then live ones, until it ends."""
        async with EventFollower(self.nc, job_id, subjects=self.subjects, after_seq=after_seq, replay=True) as follower:
            async for event in follower.events(timeout=timeout):
                yield event

    async def record(self, job_id: str) -> JobRecord | None:
        from .transport.jetstream import durability_for, results_bucket

        kv = await results_bucket(self.js, self.subjects, durability_for(self.nc))
        try:
            entry = await kv.get(job_id)
        except Exception:  # KeyNotFoundError, or deleted by TTL
            return None
        return codec.decode(JobRecord, entry.value) if entry.value else None

    async def cancel(self, job_id: str) -> None:
        await self.nc.publish(self.subjects.cancel_job(job_id), b"")

    async def methods(self, *, timeout: float = 1.0) -> list[str]:
        """The methods a controller serves; ``NoController`` if none answers."""
        try:
            msg = await self.nc.request(self.subjects.controller_methods, b"", timeout=timeout)
        except (NoRespondersError, NatsTimeout, asyncio.TimeoutError):
            raise NoController("no controller service is answering on this NATS deployment") from None
        return list(json.loads(msg.data)["methods"])
