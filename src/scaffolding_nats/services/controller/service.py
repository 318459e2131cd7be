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
from nats.micro import add_service
from nats.micro.request import Request

from ... import metrics, telemetry
from ..._compat import TaskGroup, timeout
from ...errors import ProtocolError, ScaffoldingError, UnknownMethod
from ...jobs import EventStream, HeldJobs, JobStore, intake
from ...methods.registry import MethodRegistry
from ...proto import codec
from ...proto.errors import ErrorCode, ErrorInfo
from ...proto.messages import Job, JobEventType, JobResult
from ...proto.subjects import Subjects
from ...runtime.controller import Controller
from ...runtime.request import run_request
from ...runtime.runner import TaskRunner
from ...transport import RemoteWorker
from ...transport.jetstream import Durability, check, durability_for, missing, provision
from . import degrade
from .prompting import prompt_for, sampling_defaults
from .ratelog import RateLimitedLog

log = logging.getLogger(__name__)


class ControllerService:
    """Consume jobs, at most ``max_jobs`` at once (a pull consumer: a full controller fetches
    nothing, so other replicas take the work), and run each to a result or a typed error.

    A job is known by its key, ``JobStore.key(id, owner)``: the owner comes from its subject, so
    two owners' jobs of one id are two jobs everywhere (running set, record, events, cancels).
    Each job goes claim -> build -> run -> finish; the ``JobStore`` keeps its record and events."""

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
        self.store = JobStore(nc, self.subjects)
        self._slots = asyncio.Semaphore(max_jobs)
        self.held = HeldJobs()  # by job key: deliveries from intake to ack, their runs, cancels
        self._running = self.held.tasks
        self._rejections = RateLimitedLog(log)
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self.jobs_done = 0
        self.jobs_failed = 0
        self.jobs_rejected = 0
        self.drain_seconds = drain_seconds

    async def __aenter__(self) -> ControllerService:
        js = self.js = self.nc.jetstream()
        if self.provision and await missing(js, self.subjects):
            try:
                await provision(js, self.subjects, self.durability)
            except Exception as exc:  # not the admin role: say what is missing, below
                log.warning("could not provision JetStream (%r); only the admin role may", exc)
        await check(js, self.subjects)  # NotProvisioned, naming what is missing
        self.kv = await self.store.bucket()
        self.queues = degrade.QueueGauge(js, self.subjects)  # backlog, for jobs that accept degrading
        async with AsyncExitStack() as stack:  # unwinds in reverse: see _drain for the order
            await self.remote.start()
            stack.push_async_callback(self.remote.stop)
            for subject, cb, queue in (
                (self.subjects.cancel_job_all, self._on_cancel, ""),
                (self.subjects.controller_owner_all, self._on_owner, ""),
                (intake.abandoned_subject(self.subjects), self._on_abandoned, self.subjects.controller_service),
            ):
                sub = await self.nc.subscribe(subject, cb=cb, queue=queue)
                stack.push_async_callback(sub.unsubscribe)
            self._tg = await stack.enter_async_context(TaskGroup())
            self._keeper = self._tg.create_task(self.held.keep_alive(self.durability.job_ack_wait / 4))
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
            self._puller = self._tg.create_task(intake.pull(psub, self._slots, self._start))
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
        self._puller.cancel()
        await self._service.stop()
        running = list(self.held.tasks.values())
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
            reason = await intake.consumer_problem(self.js, self.subjects)
            if reason is not None and self.ready:
                log.error("%s", reason)
            self.ready, self.not_ready_reason = reason is None, reason or ""

    # -- intake ----------------------------------------------------------------------------

    def _start(self, msg: Msg) -> None:
        assert self._tg is not None
        self._tg.create_task(self._handle(msg))

    async def _on_abandoned(self, msg: Msg) -> None:
        await self.store.abandon(msg.data, self.durability.job_max_deliver)

    async def _on_owner(self, msg: Msg) -> None:
        """Answer only for jobs this replica runs: silence means the job needs a new owner."""
        await self.held.answer(self.subjects.owner_question_key(msg.subject), msg)

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
        if self.held.cancel(JobStore.key(job_id, owner)):
            return
        # Not here: queued, running elsewhere (that replica hears this too), or unknown. The
        # cancels stream keeps this cancel for whichever controller takes the job; a record
        # still ``queued`` (written by the gateway) says so at once.
        await self.store.cancel_queued(job_id, owner)

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

    async def _run_job(self, msg: Msg) -> None:
        try:
            job, owner = intake.read_job(msg, self.subjects, max_bytes=self.durability.max_job_bytes)
        except ProtocolError as exc:
            await self._reject(msg, exc)
            return
        key = JobStore.key(job.id, owner)
        if not await self.held.take(key, msg):
            return
        try:
            await self._run_owned(job, msg, owner)
        finally:
            self.held.release(key)

    async def _run_owned(self, job: Job, msg: Msg, owner: str | None) -> None:
        seq = await self.store.claim(job, msg, owner, self.held.msgs)
        if seq is None:
            return
        events = self.store.events(job.id, owner, partials=job.stream, start_seq=seq)
        try:  # an unknown method or bad params fail the job before it is accepted
            controller, policy = self._build(job)
        except ScaffoldingError as exc:
            self.jobs_failed += 1
            await self.store.finish(job, owner, events, exc.to_info())
            await events.end()
            await msg.term()
            metrics.JOBS.labels(self._label(job.method), exc.code.value).inc()
            return
        started = time.monotonic()
        outcome = "failed"
        async with TaskGroup() as tg:
            pump = tg.create_task(events.pump())
            try:
                deliveries = msg.metadata.num_delivered if msg.metadata else 1
                events.add(JobEventType.ACCEPTED, progress={"method": job.method, "delivery": deliveries})
                await self.store.running(job, owner)
                degraded = await degrade.apply(controller, policy, self.queues)
                result = await self._execute(job, controller, events, msg)
                if degraded is not None:  # the result says what was applied instead of what was asked
                    result.metadata = {**result.metadata, "degraded": degraded}
                await self.store.finish(job, owner, events, result)
                outcome = "succeeded"
                metrics.JOB_TOKENS.labels(job.method, "completion").inc(result.usage.completion_tokens)
                metrics.JOB_TOKENS.labels(job.method, "prompt").inc(result.usage.prompt_tokens)
                metrics.JOB_TOKENS.labels(job.method, "cached").inc(result.usage.cached_tokens)
            except Exception as exc:  # the job's typed error; a defect is still a typed error event
                if not isinstance(exc, ScaffoldingError):
                    log.exception("job %s failed unexpectedly", job.id)
                error = _internal(exc)
                outcome = error.code.value
                self.jobs_failed += 1
                await self.store.finish(job, owner, events, error)
            except asyncio.CancelledError:
                # Shutting down mid-job: hand it back at once so another replica runs it.
                with contextlib.suppress(Exception):
                    await msg.nak()
                raise
            finally:
                events.close()
                await pump
        await self.held.latest(JobStore.key(job.id, owner), msg).ack()
        metrics.JOBS.labels(job.method, outcome).inc()
        metrics.JOB_SECONDS.labels(job.method).observe(time.monotonic() - started)

    def _build(self, job: Job) -> tuple[Controller, degrade.DegradePolicy | None]:
        """The job's controller tree, and its policy for running degraded under load."""
        if job.method not in self.registry:
            raise UnknownMethod(
                f"unknown method {job.method!r}",
                details={"method": job.method, "known": self.registry.names()},
            )
        params, policy = degrade.pop_policy(job.params)
        return self.registry.build(job.method, params), policy

    async def _execute(self, job: Job, controller: Controller, events: EventStream, msg: Msg) -> JobResult:
        """Run the job's method to its result, within ``max_job_seconds`` (traced if enabled)."""
        prompt = prompt_for(job, controller, self.prompt_template)
        span = (
            telemetry.tracer.start_as_current_span(
                f"job {job.method}",
                context=telemetry.extract_context(msg.headers),
                attributes={"scaffolding.job_id": job.id, "scaffolding.method": job.method},
            )
            if telemetry.enabled()
            else contextlib.nullcontext()
        )
        try:
            with span, self.held.running(events.key):  # a client's cancel: a ``cancelled`` error
                async with timeout(self.max_job_seconds):
                    done = await run_request(
                        controller,
                        self.runner,
                        prompt=prompt,
                        budget=job.budget,
                        on_event=events.from_runtime,
                        sampling_defaults=sampling_defaults(job),
                        job_id=job.id,
                        stream=job.stream,
                    )
            return done.to_result()
        except TimeoutError:
            raise ScaffoldingError(
                f"job exceeded the controller's limit of {self.max_job_seconds}s", code=ErrorCode.TIMEOUT
            ) from None

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
        """An error event (seq 0) and a failed record under the job's key, if the delivery
        names one (``intake.rejected_key``); else only the (rate-limited) log."""
        job_id, owner = intake.rejected_key(msg, self.subjects)
        self._rejections.log("rejected job %s: %s", job_id or "<no usable id>", error.message)
        if job_id:
            await self.store.refuse(job_id, owner, error)


def _internal(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, ScaffoldingError):
        return exc.to_info()
    return ErrorInfo(
        code=ErrorCode.INTERNAL,
        message=f"the controller failed on this job: {type(exc).__name__}: {exc}"[:500],
        details={"exception": type(exc).__name__},
    )
