"""ControllerService: a durable job consumer that runs methods and publishes their events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from nats.micro import add_service
from nats.micro.request import Request

from ... import metrics, telemetry
from ..._compat import TaskGroup, timeout
from ...errors import ProtocolError, ScaffoldingError, UnknownMethod
from ...methods.registry import MethodRegistry
from ...proto import codec
from ...proto.errors import ErrorCode, ErrorInfo
from ...proto.messages import Job, JobEvent, JobEventType, JobRecord, JobResult, JobState, job_digest
from ...proto.subjects import HEADER_MSG_ID, Subjects, job_key
from ...runtime.controller import Controller
from ...runtime.request import run_request
from ...runtime.runner import TaskRunner
from ...transport import RemoteWorker
from ...transport.jetstream import Durability, check, durability_for, missing, provision
from .events import EventStream
from .failover import TERMINAL, last_event, owner_alive, retrying
from .prompting import prompt_for
from .ratelog import RateLimitedLog

log = logging.getLogger(__name__)


class ControllerService:
    """Consume jobs, at most ``max_jobs`` at once (a pull consumer: a full controller fetches
    nothing, so other replicas take the work), and run each to a result or a typed error.

    A job is known by its key, ``job_key(id, owner)``: the owner comes from its subject, so two
    owners' jobs of one id are two jobs everywhere (running set, record, events, cancels)."""

    def __init__(
        self,
        nc: Client,
        registry: MethodRegistry,
        *,
        subjects: Subjects | None = None,
        max_jobs: int = 32,
        max_job_seconds: float = 900.0,
        task_timeout: float = 600.0,
        prompt_template: str = "chatml",
        durability: Durability | None = None,
        version: str = "0.1.0",
        drain_seconds: float = 30.0,
        provision: bool = True,
        health_interval: float = 2.0,
    ) -> None:
        self.nc = nc
        self.provision = provision  # create missing streams (needs the admin role) or fail clearly
        self.health_interval = health_interval
        self.ready = False
        self.not_ready_reason = "starting"
        self.registry = registry
        self.subjects = subjects or Subjects()
        self.max_jobs = max_jobs
        self.max_job_seconds = max_job_seconds
        self.prompt_template = prompt_template
        self.durability = durability or durability_for(nc)
        self.version = version
        self.remote = RemoteWorker(nc, subjects=self.subjects, timeout=task_timeout)
        self.runner = TaskRunner(fallback=self.remote)
        self._slots = asyncio.Semaphore(max_jobs)
        self._running: dict[str, tuple[asyncio.Task[Any], Msg]] = {}  # by job key
        self._owned: dict[str, Msg] = {}  # job key -> its latest delivery, from intake to ack
        self._cancel_requested: set[str] = set()  # job keys
        self._rejections = RateLimitedLog(log)
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self.jobs_done = 0
        self.jobs_failed = 0
        self.jobs_rejected = 0
        self.drain_seconds = drain_seconds
        self._closing = False

    async def __aenter__(self) -> ControllerService:
        js = self.js = self.nc.jetstream()
        if self.provision and await missing(js, self.subjects):
            try:
                await provision(js, self.subjects, self.durability)
            except Exception as exc:  # not the admin role: say what is missing, below
                log.warning("could not provision JetStream (%r); only the admin role may", exc)
        await check(js, self.subjects)  # NotProvisioned, naming what is missing
        self.kv = await js.key_value(self.subjects.results_bucket)
        async with AsyncExitStack() as stack:  # unwinds in reverse: see _drain for the order
            await self.remote.start()
            stack.push_async_callback(self.remote.stop)
            for subject, cb, queue in (
                (self.subjects.cancel_job_all, self._on_cancel, ""),
                (self.subjects.controller_owner_all, self._on_owner, ""),
                (_max_deliveries_subject(self.subjects), self._on_abandoned, self.subjects.controller_service),
            ):
                sub = await self.nc.subscribe(subject, cb=cb, queue=queue)
                stack.push_async_callback(sub.unsubscribe)
            self._tg = await stack.enter_async_context(TaskGroup())
            self._keeper = self._tg.create_task(self._keep_alive())
            stack.push_async_callback(self._drain)
            self._service = await add_service(
                self.nc,
                name=self.subjects.controller_service,
                version=self.version,
                description="runs inference-time-compute methods",
                metadata={"methods": ",".join(self.registry.names())},
                stats_handler=lambda _: {
                    "running": len(self._running),
                    "capacity": self.max_jobs,
                    "done": self.jobs_done,
                    "failed": self.jobs_failed,
                    "rejected": self.jobs_rejected,
                },
            )
            await self._service.add_endpoint(
                name="methods", subject=self.subjects.controller_methods, handler=self._on_methods
            )
            psub = await js.pull_subscribe_bind(durable=self.subjects.jobs_consumer, stream=self.subjects.jobs_stream)
            self._puller = self._tg.create_task(self._pull(psub))
            self.ready, self.not_ready_reason = True, ""
            self._health = self._tg.create_task(self._watch_consumer())
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def _drain(self) -> None:
        """Stop taking jobs, let running ones finish (still kept alive and cancellable) for up
        to ``drain_seconds``, then hand what is left back to JetStream for another replica."""
        self._closing = True
        self._puller.cancel()
        await self._service.stop()
        running = [run for run, _ in self._running.values()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.drain_seconds)
            for run in late:
                run.cancel()
            if late:
                await asyncio.wait(late)
        self._keeper.cancel()
        self._health.cancel()

    async def _watch_consumer(self) -> None:
        """Readiness follows the jobs consumer: without it no job can reach this controller
        (deleted by hand, or the stream lost), and the methods endpoint says so."""
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.js.consumer_info(self.subjects.jobs_stream, self.subjects.jobs_consumer)
            except Exception as exc:
                if self.ready:
                    log.error("jobs consumer %s unavailable: %s", self.subjects.jobs_consumer, exc)
                self.ready = False
                self.not_ready_reason = (
                    f"jobs consumer {self.subjects.jobs_stream}/{self.subjects.jobs_consumer} unavailable ({exc!r}); "
                    "run `python -m scaffolding_nats.services.admin init`"
                )
            else:
                self.ready, self.not_ready_reason = True, ""

    # -- intake ----------------------------------------------------------------------------

    async def _pull(self, psub: Any) -> None:
        assert self._tg is not None
        try:
            while True:
                await self._slots.acquire()
                try:
                    msgs = await psub.fetch(1, timeout=1.0)
                except TimeoutError:
                    self._slots.release()
                    continue
                except Exception as exc:  # a reconnect in progress; try again shortly
                    self._slots.release()
                    log.warning("fetching jobs failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for i, msg in enumerate(msgs):
                    if i:
                        await self._slots.acquire()
                    self._tg.create_task(self._handle(msg))
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _keep_alive(self) -> None:
        """Owned jobs tell JetStream they are alive (4 times per ack wait), so a long job is not
        redelivered while a dead controller's jobs are, one ack wait after it stopped."""
        while True:
            await asyncio.sleep(self.durability.job_ack_wait / 4)
            for msg in list(self._owned.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:
                    log.warning("in_progress failed: %s", exc)

    async def _on_abandoned(self, msg: Msg) -> None:
        """JetStream gave up on a job (its controllers died ``max_deliver`` times): tell its
        client, record it, and remove it, so nothing accepted disappears silently."""
        try:
            seq = int(json.loads(msg.data)["stream_seq"])
            raw = await self.js.get_msg(self.subjects.jobs_stream, seq)
        except Exception as exc:
            log.warning("could not read an abandoned job: %s", exc)
            return
        job_id = codec.peek_id(raw.data or b"", "id")
        owner = _owner_of(self.subjects, raw.subject or "")
        if job_id and await owner_alive(self.nc, self.subjects, str(job_id), owner):
            return  # redelivered by outages, but its controller lives and will ack it
        error = ErrorInfo(
            code=ErrorCode.INTERNAL,
            message=f"job abandoned after {self.durability.job_max_deliver} deliveries: "
            "the controllers running it stopped before it finished",
            details={"stream_seq": seq},
        )
        if job_id:
            method = str(codec.peek_id(raw.data or b"", "method") or "?")
            # The record first: a client that sees the terminal event can then read the record.
            await self._record(
                JobRecord(
                    job_id=job_id,
                    method=method,
                    state=JobState.FAILED,
                    error=error,
                    owner=owner,
                    digest=_digest(raw.data),
                )
            )
            events = EventStream(self.nc, self.subjects.events(job_id, owner), job_id, key=job_key(job_id, owner))
            events.error(error)
            events.close()
            await events.pump()
        metrics.JOBS.labels("?", "abandoned").inc()
        with contextlib.suppress(Exception):
            await self.js.delete_msg(self.subjects.jobs_stream, seq)

    async def _on_owner(self, msg: Msg) -> None:
        """Answer only for jobs this replica runs: silence means the job needs a new owner."""
        if self.subjects.owner_question_key(msg.subject) in self._owned and msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(b"")

    async def _on_methods(self, req: Request) -> None:
        body: dict[str, Any] = {"methods": self.registry.names(), "ready": self.ready}
        if not self.ready:
            body["reason"] = self.not_ready_reason
        await req.respond(json.dumps(body).encode())

    async def _on_cancel(self, msg: Msg) -> None:
        """A cancel names one job key (``cancel.job.<owner>.<id>``; without an owner, the
        owner-less job): another owner's job of that id is a different job, never touched."""
        job_id, owner = self.subjects.split_cancel_job(msg.subject)
        if not codec.is_id(job_id) or (owner is not None and not codec.is_id(owner)):
            return
        key = job_key(job_id, owner)
        running = self._running.get(key)
        if running is not None:
            if key not in self._cancel_requested:
                self._cancel_requested.add(key)
                running[0].cancel()
            return
        if key in self._owned:  # taken here, not running yet: it stops as it starts
            self._cancel_requested.add(key)
            return
        # Not here: queued, running elsewhere (that replica hears this too), or unknown. The
        # cancels stream keeps this cancel for whichever controller takes the job; a record
        # still ``queued`` (written by the gateway) says so at once. Nothing is written for a
        # job without a record: it may never exist.
        with contextlib.suppress(Exception):
            entry = await self.kv.get(key)
            record = codec.decode(JobRecord, entry.value or b"")
            if record.state is JobState.QUEUED and record.owner == owner:
                error = ErrorInfo(code=ErrorCode.CANCELLED, message="job cancelled by the client before it started")
                cancelled = record.model_copy(
                    update={"state": JobState.FAILED, "error": error, "updated_at": time.time()}
                )
                await self.kv.update(key, codec.encode(cancelled), last=entry.revision)

    # -- one job ---------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        metrics.JOBS_RUNNING.inc()
        try:
            await self._run_job(msg)
        except Exception as exc:  # the job boundary: a typed error at once, never a redelivery loop
            log.exception("job handling failed")
            await self._fail_boundary(msg, exc)
        finally:
            metrics.JOBS_RUNNING.dec()
            self._slots.release()
            self.jobs_done += 1

    def _label(self, method: str) -> str:
        """Metric label of a method: served names only, so labels come from a closed set."""
        return method if method in self.registry else "unknown"

    def _decode(self, msg: Msg, owner: str | None) -> Job:
        """A job without an ``id`` takes the one in its ``Nats-Msg-Id`` (its key)."""
        obj = codec.unpack_map(msg.data, max_bytes=self.durability.max_job_bytes)
        msg_id = _id_in_msg_id(msg, owner)
        if "id" not in obj and msg_id is not None:
            obj["id"] = msg_id
        return codec.validate(Job, obj)

    async def _run_job(self, msg: Msg) -> None:
        method, owner = self.subjects.split_job_subject(msg.subject) or ("", None)
        try:
            if owner is not None and not codec.is_id(owner):
                raise ProtocolError(
                    f"owner {owner!r} in {msg.subject!r} is not a valid subject token",
                    code=ErrorCode.INVALID,
                    details={"subject": msg.subject},
                )
            job = self._decode(msg, owner)
        except ProtocolError as exc:
            await self._reject(msg, exc)
            return
        if method != job.method:
            await self._reject(
                msg,
                ProtocolError(
                    f"job names method {job.method!r} but was published on {msg.subject!r}",
                    code=ErrorCode.INVALID,
                    details={"subject": msg.subject, "method": job.method},
                ),
            )
            return
        key = job_key(job.id, owner)
        held = self._owned.get(key)
        if held is not None:
            if _stream_seq(held) == _stream_seq(msg):  # redelivered (an outage) while still running here
                self._owned[key] = msg
            else:  # the same job published again (past the de-dup window): it is the one running
                log.info("job %s is running here already; its second copy joins it", key)
                await msg.term()
            return
        self._owned[key] = msg
        try:
            await self._run_owned(job, msg, owner)
        finally:
            self._owned.pop(key, None)
            self._cancel_requested.discard(key)

    async def _run_owned(self, job: Job, msg: Msg, owner: str | None) -> None:
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        key = job_key(job.id, owner)
        subject = self.subjects.events(job.id, owner)
        events = EventStream(self.nc, subject, job.id, key=key, partials=job.stream)
        if await self._cancelled_before_start(job, owner):
            error = ErrorInfo(code=ErrorCode.CANCELLED, message="job cancelled by the client before it started")
            await self._fail(job, events, error, owner)
            events.close()
            await events.pump()
            await msg.ack()
            return
        record = await self._stored_record(job.id, owner)
        if record is not None and (record.state is JobState.QUEUED or not _written_since(record, msg)):
            record = None  # the gateway's note that it was submitted, or an earlier job's under a reused id
        if record is not None or deliveries > 1:  # ended, or started (here or elsewhere) before
            taken = await self._take_over(job, msg, record, owner)
            if taken is None:
                return
            events.seq = taken
        try:  # an unknown method or bad params fail the job before it is accepted
            controller = self._build(job)
        except ScaffoldingError as exc:
            self.jobs_failed += 1
            await self._fail(job, events, exc.to_info(), owner)
            events.close()
            await events.pump()
            await msg.term()
            metrics.JOBS.labels(self._label(job.method), exc.code.value).inc()
            return
        started = time.monotonic()
        outcome = "failed"
        async with TaskGroup() as tg:
            pump = tg.create_task(events.pump())
            try:
                events.add(JobEventType.ACCEPTED, progress={"method": job.method, "delivery": deliveries})
                await self._record(_record_of(job, owner, JobState.RUNNING))
                result = await self._execute(job, controller, events, msg, key)
                await self._record(_record_of(job, owner, JobState.SUCCEEDED, result=result))
                events.result(result)
                outcome = "succeeded"
                metrics.JOB_TOKENS.labels(job.method, "completion").inc(result.usage.completion_tokens)
                metrics.JOB_TOKENS.labels(job.method, "prompt").inc(result.usage.prompt_tokens)
            except ScaffoldingError as exc:
                outcome = exc.code.value
                self.jobs_failed += 1
                await self._fail(job, events, exc.to_info(), owner)
            except Exception as exc:  # a defect, not the job's fault: still a typed error event
                log.exception("job %s failed unexpectedly", job.id)
                outcome = ErrorCode.INTERNAL.value
                self.jobs_failed += 1
                await self._fail(job, events, _internal(exc), owner)
            except asyncio.CancelledError:
                # Shutting down mid-job: hand it back at once so another replica runs it.
                with contextlib.suppress(Exception):
                    await msg.nak()
                raise
            finally:
                events.close()
                await pump
        await self._owned.get(key, msg).ack()
        metrics.JOBS.labels(job.method, outcome).inc()
        metrics.JOB_SECONDS.labels(job.method).observe(time.monotonic() - started)

    def _build(self, job: Job) -> Controller:
        if job.method not in self.registry:
            raise UnknownMethod(
                f"unknown method {job.method!r}",
                details={"method": job.method, "known": self.registry.names()},
            )
        return self.registry.build(job.method, job.params)

    async def _execute(self, job: Job, controller: Controller, events: EventStream, msg: Msg, key: str) -> JobResult:
        prompt = prompt_for(job, controller, self.prompt_template)
        if telemetry.enabled():
            with telemetry.tracer.start_as_current_span(
                f"job {job.method}",
                context=telemetry.extract_context(msg.headers),
                attributes={"scaffolding.job_id": job.id, "scaffolding.method": job.method},
            ):
                return await self._run(job, controller, prompt, events, msg, key)
        return await self._run(job, controller, prompt, events, msg, key)

    async def _run(self, job: Job, controller: Any, prompt: Any, events: EventStream, msg: Msg, key: str) -> JobResult:
        run = asyncio.current_task()
        assert run is not None
        self._running[key] = (run, msg)
        try:
            if key in self._cancel_requested:  # cancelled between intake and now
                raise ScaffoldingError("job cancelled by the client", code=ErrorCode.CANCELLED)
            async with timeout(self.max_job_seconds):
                done = await run_request(
                    controller,
                    self.runner,
                    prompt=prompt,
                    budget=job.budget,
                    on_event=events.from_runtime,
                    sampling_defaults=_sampling_defaults(job),
                    job_id=job.id,
                    stream=job.stream,
                )
            return done.to_result()
        except asyncio.CancelledError:
            if key not in self._cancel_requested:
                raise
            run.uncancel()
            raise ScaffoldingError("job cancelled by the client", code=ErrorCode.CANCELLED) from None
        except TimeoutError:
            raise ScaffoldingError(
                f"job exceeded the controller's limit of {self.max_job_seconds}s", code=ErrorCode.TIMEOUT
            ) from None
        finally:
            self._running.pop(key, None)
            self._cancel_requested.discard(key)

    async def _cancelled_before_start(self, job: Job, owner: str | None) -> bool:
        """A cancel for this job (its key) arrived while it was queued: kept in the cancels
        stream, so one sent while no controller ran is still seen, and noted in a record the
        gateway wrote (``queued``, then ``failed``/``cancelled``)."""
        try:
            await self.js.get_last_msg(self.subjects.cancels_stream, self.subjects.cancel_job(job.id, owner))
            return True
        except Exception:  # none kept (the usual case), or no cancels stream provisioned
            pass
        try:
            entry = await self.kv.get(job_key(job.id, owner))
        except Exception:  # no record: the usual case
            return False
        if not entry.value:
            return False
        record = codec.decode(JobRecord, entry.value)
        error = record.error
        return (
            record.owner == owner
            and record.state is JobState.FAILED
            and error is not None
            and error.code is ErrorCode.CANCELLED
        )

    async def _take_over(self, job: Job, msg: Msg, record: JobRecord | None, owner: str | None) -> int | None:
        """A job seen before (a redelivery, a record, or both): None if it needs no run here
        (its owner lives, or it already ended: then its terminal event is made sure of and the
        delivery acked), else the event seq to continue from."""
        key = job_key(job.id, owner)
        if record is None or record.state is JobState.RUNNING:
            self._owned.pop(key, None)  # not ours yet: do not claim it to the question
            if await owner_alive(self.nc, self.subjects, job.id, owner):
                return None  # its owner keeps it alive; JetStream redelivers it if the owner dies
            self._owned[key] = msg
        subject = self.subjects.events(job.id, owner)
        last = await last_event(self.nc, self.subjects, subject)
        if record is not None and record.state in (JobState.SUCCEEDED, JobState.FAILED):
            if last is None or last.type not in TERMINAL:
                events = EventStream(self.nc, subject, job.id, key=key, start_seq=_after(last))
                if record.result is not None:
                    events.result(record.result)
                else:
                    events.error(record.error or ErrorInfo(code=ErrorCode.INTERNAL, message="job failed"))
                events.close()
                await events.pump()
            await msg.ack()
            return None
        if last is not None and last.type in TERMINAL:  # it ended; its record or ack was lost
            state = JobState.SUCCEEDED if last.type is JobEventType.RESULT else JobState.FAILED
            await self._record(_record_of(job, owner, state, result=last.result, error=last.error))
            await msg.ack()
            return None
        return _after(last)

    async def _stored_record(self, job_id: str, owner: str | None) -> JobRecord | None:
        """The job's own record, if any (its key is the owner's; the owner check is a second lock)."""

        async def get() -> JobRecord | None:
            try:
                entry = await self.kv.get(job_key(job_id, owner))
            except NotFoundError:  # no such key (or deleted): the usual case, a new job
                return None
            return codec.decode(JobRecord, entry.value) if entry.value else None

        record = await retrying(get, what=f"reading the record of job {job_id}")
        return record if record is not None and record.owner == owner else None

    async def _fail(self, job: Job, events: EventStream, error: ErrorInfo, owner: str | None = None) -> None:
        await self._record(_record_of(job, owner, JobState.FAILED, error=error))
        events.error(error)

    async def _record(self, record: JobRecord) -> None:
        """Retried through reconnects; the events still tell the client if it never lands."""
        data = codec.encode(record)
        key = job_key(record.job_id, record.owner)
        try:
            await retrying(lambda: self.kv.put(key, data), what=f"storing the record of job {key}")
        except Exception as exc:
            log.warning("could not store job %s: %s", key, exc)

    async def _reject(self, msg: Msg, exc: ProtocolError) -> None:
        """A job that breaks the contract is not retried; its sender hears why if it has an id."""
        self.jobs_rejected += 1
        await self._tell(msg, exc.to_info())
        metrics.JOBS.labels("?", exc.code.value).inc()
        await msg.term()

    async def _fail_boundary(self, msg: Msg, exc: Exception) -> None:
        """Handling a job raised: tell its sender (best effort) and drop it from the stream now,
        so a poison job neither crashes a controller nor waits out redeliveries."""
        self.jobs_failed += 1
        metrics.JOBS.labels("?", ErrorCode.INTERNAL.value).inc()
        try:
            await self._tell(msg, _internal(exc))
        except Exception:
            log.exception("could not report a failed job")
        with contextlib.suppress(Exception):
            await msg.term()

    async def _tell(self, msg: Msg, error: ErrorInfo) -> None:
        """An error event (seq 0) and a failed record under the job's key: its id is the one in
        the job if it is a valid subject token, else the one in its ``Nats-Msg-Id``; with
        neither (or an owner that is no subject token), only the (rate-limited) log."""
        owner = _owner_of(self.subjects, msg.subject)
        job_id = codec.peek_id(msg.data, "id")
        if owner is not None and not codec.is_id(owner):
            job_id = None  # no subject of its owner can be named
        elif job_id is None:
            job_id = _id_in_msg_id(msg, owner)
        self._rejections.log("rejected job %s: %s", job_id or "<no usable id>", error.message)
        if job_id:
            events = EventStream(self.nc, self.subjects.events(job_id, owner), job_id, key=job_key(job_id, owner))
            events.error(error)
            events.close()
            await events.pump()
            await self._record(JobRecord(job_id=job_id, method="?", state=JobState.FAILED, error=error, owner=owner))


def _internal(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, ScaffoldingError):
        return exc.to_info()
    return ErrorInfo(
        code=ErrorCode.INTERNAL,
        message=f"the controller failed on this job: {type(exc).__name__}: {exc}"[:500],
        details={"exception": type(exc).__name__},
    )


def _sampling_defaults(job: Job) -> dict[str, Any]:
    defaults = job.sampling.model_dump(exclude_none=True) if job.sampling is not None else {}
    if job.model is not None:
        defaults.setdefault("model", job.model)
    return defaults


def _written_since(record: JobRecord, msg: Msg) -> bool:
    """Whether ``record`` was written after ``msg`` was stored, so it is that job's (a delivery
    that lost its state after a server restart), not an earlier job's with the same id."""
    stored = msg.metadata.timestamp if msg.metadata else None
    return stored is None or record.updated_at >= stored.timestamp()


def _after(last: JobEvent | None) -> int:
    """The seq that continues a job's events after ``last`` (0 when it has none)."""
    return 0 if last is None else last.seq + 1


def _record_of(
    job: Job, owner: str | None, state: JobState, *, result: JobResult | None = None, error: ErrorInfo | None = None
) -> JobRecord:
    return JobRecord(
        job_id=job.id, method=job.method, state=state, owner=owner, digest=job_digest(job), result=result, error=error
    )


def _digest(data: bytes | None) -> str | None:
    """The digest of a job's raw bytes, if they still decode as a job."""
    try:
        return job_digest(codec.decode(Job, data or b""))
    except ProtocolError:
        return None


def _id_in_msg_id(msg: Msg, owner: str | None) -> str | None:
    """The job id a ``Nats-Msg-Id`` names: the key ``<owner>.<id>`` of an owned job (or a bare
    id, as clients older than owner-scoped keys send), the id itself for an owner-less one."""
    msg_id = msg.headers.get(HEADER_MSG_ID) if msg.headers else None
    if not isinstance(msg_id, str):
        return None
    if owner is not None and msg_id.startswith(f"{owner}."):
        msg_id = msg_id[len(owner) + 1 :]
    return msg_id if codec.is_id(msg_id) else None


def _stream_seq(msg: Msg) -> int | None:
    return msg.metadata.sequence.stream if msg.metadata else None


def _owner_of(subjects: Subjects, subject: str) -> str | None:
    split = subjects.split_job_subject(subject)
    return split[1] if split else None


def _max_deliveries_subject(subjects: Subjects) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{subjects.jobs_stream}.{subjects.jobs_consumer}"
