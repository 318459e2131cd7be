"""JobStore: the one place that knows how a job is kept on the bus.

* Its record lives in the results bucket under its key, ``job_key(id, owner)``; nothing else
  reads or writes that bucket.
* Another owner's job is invisible: a record is returned only to the owner it names (the key
  already carries the owner; the check is a second lock).
* A cancel sent while the job was queued is kept (the cancels stream, or a ``queued`` record
  turned ``failed``/``cancelled``), so whichever controller takes the job later sees it.
* A job ends with one terminal event (``TERMINAL``), written after its record, so a client that
  sees the event can read the record.

The controller makes each call once per job: ``claim`` (skip it, or run it from event seq N),
then ``finish`` (record, then terminal event).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import MutableMapping

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from .. import metrics
from ..errors import ProtocolError
from ..proto import codec
from ..proto.errors import ErrorCode, ErrorInfo
from ..proto.messages import Job, JobEvent, JobEventType, JobRecord, JobResult, JobState, job_digest
from ..proto.subjects import Subjects, job_key
from .events import TERMINAL, EventStream
from .failover import last_event, owner_alive, retrying
from .intake import owner_of

log = logging.getLogger(__name__)

__all__ = ["TERMINAL", "JobStore", "is_terminal", "record_of", "visible"]

Outcome = JobResult | ErrorInfo
"""How a job ended: its result, or its typed error."""


def is_terminal(event: JobEvent | None) -> bool:
    """Whether ``event`` ends its job (a result or an error)."""
    return event is not None and event.type in TERMINAL


def visible(record: JobRecord | None, owner: str | None) -> JobRecord | None:
    """``record`` if it is ``owner``'s, else None: another owner's job is as invisible as an unknown one."""
    return record if record is not None and record.owner == owner else None


def record_of(
    job: Job, owner: str | None, state: JobState, *, result: JobResult | None = None, error: ErrorInfo | None = None
) -> JobRecord:
    return JobRecord(
        job_id=job.id, method=job.method, state=state, owner=owner, digest=job_digest(job), result=result, error=error
    )


class JobStore:
    """Records, kept cancels and terminal events of jobs, for one deployment (``subjects``)."""

    key = staticmethod(job_key)  # the KV key (and de-duplication id) of a job

    def __init__(self, nc: Client, subjects: Subjects | None = None) -> None:
        self.nc = nc
        self.subjects = subjects or Subjects()
        self.js = nc.jetstream()
        self._kv: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        """The results bucket (``BucketNotFoundError`` if it is not provisioned)."""
        if self._kv is None:
            self._kv = await self.js.key_value(self.subjects.results_bucket)
        return self._kv

    # -- records ---------------------------------------------------------------------------

    async def create(self, record: JobRecord) -> bool:
        """Create ``record`` unless its key holds one already (False then): one of two racing
        submissions of an id wins."""
        kv = await self.bucket()
        try:
            await kv.create(job_key(record.job_id, record.owner), codec.encode(record))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def record(self, job_id: str, owner: str | None) -> JobRecord | None:
        """The record under the owner's key, or None (unknown, not started, or expired)."""
        kv = await self.bucket()
        try:
            entry = await kv.get(job_key(job_id, owner))
        except Exception:  # KeyNotFoundError, or deleted by TTL
            return None
        return codec.decode(JobRecord, entry.value) if entry.value else None

    async def own_record(self, job_id: str, owner: str | None) -> JobRecord | None:
        """The owner's job of that id, or None (unknown, expired, or another owner's)."""
        return visible(await self.record(job_id, owner), owner)

    async def stored_record(self, job_id: str, owner: str | None) -> JobRecord | None:
        """``own_record``, retried through reconnects (only a missing key means none)."""

        async def get() -> JobRecord | None:
            kv = await self.bucket()
            try:
                entry = await kv.get(job_key(job_id, owner))
            except NotFoundError:  # no such key (or deleted): the usual case, a new job
                return None
            return codec.decode(JobRecord, entry.value) if entry.value else None

        return visible(await retrying(get, what=f"reading the record of job {job_id}"), owner)

    async def put(self, record: JobRecord) -> None:
        """Retried through reconnects; the events still tell the client if it never lands."""
        data = codec.encode(record)
        key = job_key(record.job_id, record.owner)
        try:
            kv = await self.bucket()
            await retrying(lambda: kv.put(key, data), what=f"storing the record of job {key}")
        except Exception as exc:
            log.warning("could not store job %s: %s", key, exc)

    # -- cancels ---------------------------------------------------------------------------

    async def cancel_kept(self, job_id: str, owner: str | None) -> bool:
        """A cancel for this job (its key) arrived while it was queued: kept in the cancels
        stream, so one sent while no controller ran is still seen, and noted in a record the
        gateway wrote (``queued``, then ``failed``/``cancelled``)."""
        try:
            await self.js.get_last_msg(self.subjects.cancels_stream, self.subjects.cancel_job(job_id, owner))
            return True
        except Exception:  # none kept (the usual case), or no cancels stream provisioned
            pass
        try:
            entry = await (await self.bucket()).get(job_key(job_id, owner))
        except Exception:  # no record: the usual case
            return False
        if not entry.value:
            return False
        record = visible(codec.decode(JobRecord, entry.value), owner)
        error = record.error if record is not None else None
        return (
            record is not None
            and record.state is JobState.FAILED
            and error is not None
            and error.code is ErrorCode.CANCELLED
        )

    async def cancel_queued(self, job_id: str, owner: str | None) -> None:
        """Note a cancel in the job's ``queued`` record (written by the gateway), if it has one;
        nothing is written for a job without a record: it may never exist."""
        key = job_key(job_id, owner)
        with contextlib.suppress(Exception):
            kv = await self.bucket()
            entry = await kv.get(key)
            record = visible(codec.decode(JobRecord, entry.value or b""), owner)
            if record is not None and record.state is JobState.QUEUED:
                error = ErrorInfo(code=ErrorCode.CANCELLED, message="job cancelled by the client before it started")
                cancelled = record.model_copy(
                    update={"state": JobState.FAILED, "error": error, "updated_at": time.time()}
                )
                await kv.update(key, codec.encode(cancelled), last=entry.revision)

    # -- events ----------------------------------------------------------------------------

    def events(self, job_id: str, owner: str | None, *, partials: bool = True, start_seq: int = 0) -> EventStream:
        """The job's event stream (its subject and de-duplication ids are the owner's)."""
        subject = self.subjects.events(job_id, owner)
        return EventStream(self.nc, subject, job_id, key=job_key(job_id, owner), partials=partials, start_seq=start_seq)

    async def announce(self, job_id: str, owner: str | None, outcome: Outcome, *, start_seq: int = 0) -> None:
        """A lone terminal event for a job that does not run here, published before returning."""
        events = self.events(job_id, owner, start_seq=start_seq)
        _end(events, outcome)
        await events.end()

    # -- one job, as the controller runs it ------------------------------------------------

    async def claim(self, job: Job, msg: Msg, owner: str | None, held: MutableMapping[str, Msg]) -> int | None:
        """Whether this delivery of ``job`` is run here: None to skip it (cancelled while queued,
        ended already, or its live owner still runs it; acked where nothing is left to do),
        else the event seq to run it from (0 for a new job). ``held``: the deliveries this
        replica holds by job key (which answer the owner question), ``msg`` among them."""
        if await self.cancel_kept(job.id, owner):
            error = ErrorInfo(code=ErrorCode.CANCELLED, message="job cancelled by the client before it started")
            events = self.events(job.id, owner, partials=job.stream)
            await self.finish(job, owner, events, error)
            await events.end()
            await msg.ack()
            return None
        record = await self.stored_record(job.id, owner)
        if record is not None and (record.state is JobState.QUEUED or not _written_since(record, msg)):
            record = None  # the gateway's note that it was submitted, or an earlier job's under a reused id
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        if record is None and deliveries <= 1:
            return 0
        return await self._take_over(job, msg, record, owner, held)  # ended, or started before

    async def _take_over(
        self, job: Job, msg: Msg, record: JobRecord | None, owner: str | None, held: MutableMapping[str, Msg]
    ) -> int | None:
        """A job seen before (a redelivery, a record, or both): None if it needs no run here
        (its owner lives, or it already ended: then its terminal event is made sure of and the
        delivery acked), else the event seq to continue from."""
        key = job_key(job.id, owner)
        if record is None or record.state is JobState.RUNNING:
            held.pop(key, None)  # not ours yet: do not claim it to the question
            if await owner_alive(self.nc, self.subjects, job.id, owner):
                return None  # its owner keeps it alive; JetStream redelivers it if the owner dies
            held[key] = msg
        last = await last_event(self.nc, self.subjects, self.subjects.events(job.id, owner))
        if record is not None and record.state in (JobState.SUCCEEDED, JobState.FAILED):
            if not is_terminal(last):
                outcome: Outcome = (
                    record.result
                    if record.result is not None
                    else record.error or ErrorInfo(code=ErrorCode.INTERNAL, message="job failed")
                )
                await self.announce(job.id, owner, outcome, start_seq=_after(last))
            await msg.ack()
            return None
        if last is not None and is_terminal(last):  # it ended; its record or ack was lost
            state = JobState.SUCCEEDED if last.type is JobEventType.RESULT else JobState.FAILED
            await self.put(record_of(job, owner, state, result=last.result, error=last.error))
            await msg.ack()
            return None
        return _after(last)

    async def running(self, job: Job, owner: str | None) -> None:
        await self.put(record_of(job, owner, JobState.RUNNING))

    async def finish(self, job: Job, owner: str | None, events: EventStream, outcome: Outcome) -> None:
        """The job's outcome: its record first, then its terminal event (queued on ``events``)."""
        if isinstance(outcome, JobResult):
            await self.put(record_of(job, owner, JobState.SUCCEEDED, result=outcome))
        else:
            await self.put(record_of(job, owner, JobState.FAILED, error=outcome))
        _end(events, outcome)

    async def refuse(self, job_id: str, owner: str | None, error: ErrorInfo) -> None:
        """A delivery that could not be run (it broke the contract, or handling it failed): its
        error event (seq 0), then a failed record under its key."""
        await self.announce(job_id, owner, error)
        await self.put(JobRecord(job_id=job_id, method="?", state=JobState.FAILED, error=error, owner=owner))

    async def abandon(self, advisory: bytes, max_deliver: int) -> None:
        """JetStream gave up on a job (its controllers died ``max_deliver`` times; ``advisory``
        says which): tell its client, record it, and remove it, so nothing accepted disappears
        silently."""
        try:
            seq = int(json.loads(advisory)["stream_seq"])
            raw = await self.js.get_msg(self.subjects.jobs_stream, seq)
        except Exception as exc:
            log.warning("could not read an abandoned job: %s", exc)
            return
        job_id = codec.peek_id(raw.data or b"", "id")
        owner = owner_of(self.subjects, raw.subject or "")
        if job_id and await owner_alive(self.nc, self.subjects, str(job_id), owner):
            return  # redelivered by outages, but its controller lives and will ack it
        error = ErrorInfo(
            code=ErrorCode.INTERNAL,
            message=f"job abandoned after {max_deliver} deliveries: "
            "the controllers running it stopped before it finished",
            details={"stream_seq": seq},
        )
        if job_id:
            method = str(codec.peek_id(raw.data or b"", "method") or "?")
            record = JobRecord(
                job_id=job_id, method=method, state=JobState.FAILED, error=error, owner=owner, digest=_digest(raw.data)
            )
            await self.put(record)  # the record first: a client that sees the terminal event can read it
            await self.announce(job_id, owner, error)
        metrics.JOBS.labels("?", "abandoned").inc()
        with contextlib.suppress(Exception):
            await self.js.delete_msg(self.subjects.jobs_stream, seq)


def _end(events: EventStream, outcome: Outcome) -> None:
    if isinstance(outcome, JobResult):
        events.result(outcome)
    else:
        events.error(outcome)


def _written_since(record: JobRecord, msg: Msg) -> bool:
    """Whether ``record`` was written after ``msg`` was stored, so it is that job's (a delivery
    that lost its state after a server restart), not an earlier job's with the same id."""
    stored = msg.metadata.timestamp if msg.metadata else None
    return stored is None or record.updated_at >= stored.timestamp()


def _after(last: JobEvent | None) -> int:
    """The seq that continues a job's events after ``last`` (0 when it has none)."""
    return 0 if last is None else last.seq + 1


def _digest(data: bytes | None) -> str | None:
    """The digest of a job's raw bytes, if they still decode as a job."""
    try:
        return job_digest(codec.decode(Job, data or b""))
    except ProtocolError:
        return None
