"""JobClient: submit jobs and follow their events over NATS (the gateway is one user of it).

Submitting goes through JetStream, so a job published while no controller runs is kept and
run when one starts. Events are live on ``<prefix>.events.<id>`` and also kept in a stream, so
a client that subscribes late replays them from the start, and one that reconnects resumes
after the last seq it saw (``EventFollower``): no terminal event is missed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck
from nats.js.errors import BucketNotFoundError

from ..errors import DeadlineExceeded, ScaffoldingError
from ..proto import codec
from ..proto.errors import ErrorCode, NoController
from ..proto.messages import Job, JobEvent, JobEventType, JobRecord, JobResult, JobState, job_digest
from ..proto.subjects import HEADER_MSG_ID, Subjects
from ..proto.tasks import new_id
from ..telemetry import inject_headers
from ..transport.jetstream import NotProvisioned
from .follower import EventFollower
from .store import JobStore

log = logging.getLogger(__name__)


class JobClient:
    """``owner``: the owner token of this client's jobs (a NATS client role's name, or a
    gateway tenant); their subjects carry it, so permissions can confine a client to them.
    Methods take ``owner`` to act for another owner (the gateway, for each tenant)."""

    def __init__(
        self, nc: Client, *, subjects: Subjects | None = None, owner: str | None = None, read_stream: bool = True
    ) -> None:
        self.nc = nc
        self.subjects = subjects or Subjects()
        self.owner = owner
        self.read_stream = read_stream  # False for a role that may not read the events stream
        self.js = nc.jetstream()
        self.store = JobStore(nc, self.subjects)  # records and their keys

    def _owner(self, owner: str | None) -> str | None:
        return self.owner if owner is None else owner

    async def submit(self, job: Job, *, owner: str | None = None, msg_id: str | None = None) -> PubAck:
        """Store the job durably. Its ``Nats-Msg-Id`` is its key (``<owner>.<id>``), so a
        publish repeated within two minutes is stored once, and never collides with another
        owner's job of the same id (``msg_id`` overrides it)."""
        owner = self._owner(owner)
        headers = inject_headers({HEADER_MSG_ID: msg_id or JobStore.key(job.id, owner)}) or {}
        data = codec.check_size(codec.encode(job), self.nc.max_payload, "job")
        return await self.js.publish(self.subjects.jobs(job.method, owner), data, headers=headers)

    async def submit_once(self, job: Job, *, owner: str | None = None) -> JobRecord | None:
        """Submit ``job`` unless its owner already has a job under its id: the id is an
        idempotency key for as long as the job's record is kept (1 h). None when this call
        submitted it; else the record of the job that holds the id (compare ``digest`` with
        ``job_digest(job)`` to tell a retry from a conflict). Needs the bucket's write right.

        The ``queued`` record is created first (atomically: one of two racing submissions
        wins), then the job is published; a job still queued is published again, which the
        stream de-duplicates, so a submission cut off between the two steps can be retried."""
        owner = self._owner(owner)
        key = JobStore.key(job.id, owner)
        try:
            await self.store.bucket()
        except BucketNotFoundError:
            raise NotProvisioned(
                f"no results bucket {self.subjects.results_bucket}: "
                "run `python -m scaffolding_nats.services.admin init`",
                details={"missing": [self.subjects.results_bucket]},
            ) from None
        queued = JobRecord(job_id=job.id, method=job.method, state=JobState.QUEUED, owner=owner, digest=job_digest(job))
        for _ in range(2):
            if await self.store.create(queued):
                break
            existing = await self.record(job.id, owner=owner)
            if existing is not None:
                if existing.state is JobState.QUEUED and existing.digest == queued.digest:
                    await self.submit(job, owner=owner)
                return existing
            # expired or deleted between the two calls: the id is free again, try once more
        else:
            raise ScaffoldingError(
                f"the record of job {job.id} could neither be created nor read", code=ErrorCode.INTERNAL
            )
        ack = await self.submit(job, owner=owner)
        if ack.duplicate:
            # The record was new, so no publish of ours holds this de-duplication id: another
            # connection forged it (a Nats-Msg-Id is any header). Publish under one nobody knows.
            log.warning("job %s: its de-duplication id %s was taken by another publisher", job.id, key)
            await self.submit(job, owner=owner, msg_id=f"{key}.{new_id()}")
        return None

    async def events(
        self,
        job: Job,
        *,
        timeout: float = 600.0,
        idle_timeout: float | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[JobEvent]:
        """Submit ``job`` and yield its events until the result or error (or a deadline)."""
        async with EventFollower(
            self.nc, job.id, subjects=self.subjects, owner=self._owner(owner), read_stream=self.read_stream
        ) as follower:
            await self.submit(job, owner=owner)
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

    async def replay(
        self, job_id: str, *, after_seq: int = -1, timeout: float = 600.0, owner: str | None = None
    ) -> AsyncIterator[JobEvent]:
        """Every event of a job after ``after_seq`` (all by default), then live ones, until it ends.

        The kept events are read one by one from the events stream (``STREAM.MSG.GET`` with
        ``next_by_subj``: no consumer is created, so a role without that right can replay);
        live ones arrive on a subscription made first, and the two meet by event ``seq``
        (``EventFollower``, which also resumes after a reconnect)."""
        async with EventFollower(
            self.nc, job_id, subjects=self.subjects, owner=self._owner(owner), after_seq=after_seq, replay=True
        ) as follower:
            async for event in follower.events(timeout=timeout):
                yield event

    async def record(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        """The record of the owner's job (key ``<owner>.<id>``), or None (unknown, not
        started, or expired)."""
        return await self.store.record(job_id, self._owner(owner))

    async def own_record(self, job_id: str, *, owner: str | None = None) -> JobRecord | None:
        """``record``, but only if it is the owner's: another owner's job is invisible."""
        return await self.store.own_record(job_id, self._owner(owner))

    async def cancel(self, job_id: str, *, owner: str | None = None) -> None:
        """Stop a running job, or a queued one even while no controller runs: the cancel is
        kept (stream ``<NAME>_CANCELS``), and whichever controller takes the job later looks
        for it there before running it."""
        await self.nc.publish(self.subjects.cancel_job(job_id, self._owner(owner)), b"")

    async def methods(self, *, timeout: float = 1.0) -> list[str]:
        """The methods a controller serves; ``NoController`` if none answers, or if the one that
        answers cannot take jobs (its jobs consumer is gone)."""
        try:
            msg = await self.nc.request(self.subjects.controller_methods, b"", timeout=timeout)
        except (TimeoutError, NoRespondersError, NatsTimeout):
            raise NoController("no controller service is answering on this NATS deployment") from None
        body = json.loads(msg.data)
        if body.get("ready") is False:
            reason = body.get("reason", "?")
            raise NoController(f"the controller that answered is not ready: {reason}", details={"reason": reason})
        return list(body["methods"])
