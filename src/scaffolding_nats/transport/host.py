"""WorkerHost: serves a local Worker on the bus, as a NATS micro service.

Controllers queue tasks in a JetStream work queue per tag; each replica pulls only as many as
it has free slots (``max_concurrency``), so work above the fleet's capacity waits in the queue
for the first free slot instead of failing. A pulled task reports progress while it runs (so a
long generation is not redelivered) and is acked after its final frame; a replica that dies or
loses NATS for longer than the ack wait has its tasks redelivered to another.

The micro endpoint ``<prefix>.tasks.<tag>`` also takes direct requests (tools, other languages,
debugging); those share the same slots and are answered ``at_capacity`` when none is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import OutboundBufferLimitError
from nats.js.errors import Error as JetStreamError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from .. import metrics, telemetry
from .._compat import TaskGroup, timeout
from ..errors import ProtocolError, ScaffoldingError
from ..proto import codec
from ..proto.errors import ErrorCode, ErrorInfo, http_status_for, task_status_for
from ..proto.messages import FrameType, TaskReply, TaskRequest
from ..proto.subjects import (
    ANY,
    HEADER_ATTEMPTS_BELOW,
    HEADER_REPLY_TO,
    HEADER_SERVICE_ERROR,
    HEADER_SERVICE_ERROR_CODE,
    Subjects,
)
from ..proto.tasks import StreamingTask, Task, TaskStatus
from ..proto.version import DEFAULT_MAX_TASK_BYTES, PROTOCOL_VERSION
from ..runtime.worker import Worker, fail
from .finals import KeptFinals, ask_peers
from .jetstream import (
    Durability,
    TaskQueueSettings,
    check_task_queues,
    durability_for,
    provision_task_queues,
    task_queues_missing,
)
from .puller import Puller, Slots

log = logging.getLogger(__name__)

@dataclass
class HostStats:
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    bad_requests: int = 0
    cancelled: int = 0
    redelivered: int = 0  # tasks this replica took over from one that died or went silent
    replayed: int = 0  # redelivered tasks answered with a kept final frame instead of run again


@dataclass
class QueueDepth:
    """A tag's work queue as its consumer last reported it (refreshed every few seconds)."""

    pending: int = 0  # queued, not yet taken by any replica
    ack_pending: int = 0  # taken by some replica, not yet done
    waiting_pulls: int = 0


_CANCELS_REMEMBERED = 10_000  # task ids cancelled before a replica took them (dropped on arrival)


class WorkerHost:
    """Serve ``worker`` on each of ``tags`` until the context exits (then drain in-flight)."""

    def __init__(
        self,
        nc: Client,
        worker: Worker,
        *,
        tags: Sequence[str],
        subjects: Subjects | None = None,
        max_concurrency: int = 64,
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
        name: str = "scaffolding-worker",
        version: str = "0.1.0",
        min_heartbeat: float = 0.1,
        drain_seconds: float = 30.0,
        durability: Durability | None = None,
        queue: TaskQueueSettings | None = None,
        queue_stats_every: float = 2.0,
        models_every: float = 30.0,
        provision: bool = True,
    ) -> None:
        if not tags:
            raise ValueError("a WorkerHost needs at least one worker tag")
        self.nc = nc
        self.worker = worker
        self.tags = list(tags)
        self.subjects = subjects or Subjects()
        self.max_concurrency = max_concurrency
        self.max_task_bytes = max_task_bytes
        self.name = name
        self.version = version
        self.min_heartbeat = min_heartbeat
        self.drain_seconds = drain_seconds
        self.durability = durability or durability_for(nc)
        self.queue = queue or TaskQueueSettings()
        self.queue_stats_every = queue_stats_every
        self.models_every = models_every  # how often the worker's served models are asked again
        self.models: list[str] = []
        self.provision = provision  # create missing task queues (works without auth; else admin's job)
        self._progress_every = max(min_heartbeat, self.queue.ack_wait / 4)
        self._shutting_down = False
        self.stats = HostStats()
        self.depth: dict[str, QueueDepth] = {tag: QueueDepth() for tag in self.tags}
        self._in_flight_by_tag: Counter[str] = Counter()
        self.slots = Slots(max_concurrency)
        self._pullers: list[Puller] = []
        self._running: dict[str, _Live] = {}
        self._cancel_requested: set[str] = set()
        self._cancelled_early: OrderedDict[str, float] = OrderedDict()
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self.service: Service | None = None
        self._tag_metrics: dict[str, _TagMetrics] = {}
        self.finals = KeptFinals()  # so a final frame lost in an outage is sent again, not re-run
        self.final_lookup_wait = 0.5  # how long a redelivered task waits for a peer's kept frame

    def _metrics(self, tag: str) -> _TagMetrics:
        m = self._tag_metrics.get(tag)
        if m is None:
            m = self._tag_metrics[tag] = _TagMetrics(tag)
        return m

    async def __aenter__(self) -> WorkerHost:
        js = self.nc.jetstream()
        try:
            if self.provision and await task_queues_missing(js, self.subjects, self.tags):
                try:
                    await provision_task_queues(js, self.subjects, self.tags, self.durability, self.queue)
                except Exception as exc:  # not the admin role: say what is missing, below
                    log.warning("could not create the task queues (%r); only the admin role may", exc)
            await check_task_queues(js, self.subjects, self.tags)  # NotProvisioned, naming them
        except JetStreamError as exc:
            raise ScaffoldingError(
                f"the worker host needs JetStream for its task queues ({self.subjects.tasks_stream}): {exc!r}",
                code=ErrorCode.INTERNAL,
                details={"stream": self.subjects.tasks_stream, "tags": self.tags},
            ) from exc
        async with AsyncExitStack() as stack:
            # Unwinds in reverse: intake stops, in-flight tasks drain (still heartbeating and
            # cancellable), then the ticker, the cancel subscription and the worker stop.
            await self.worker.start()
            stack.push_async_callback(self.worker.stop)
            cancel_sub = await self.nc.subscribe(self.subjects.cancel_task_all, cb=self._on_cancel)
            stack.push_async_callback(cancel_sub.unsubscribe)
            models_sub = await self.nc.subscribe(self.subjects.worker_models, cb=self._on_models)
            stack.push_async_callback(models_sub.unsubscribe)
            for tag in self.tags:
                finals_sub = await self.nc.subscribe(self.subjects.task_final(tag, ANY), cb=self.finals.answer)
                stack.push_async_callback(finals_sub.unsubscribe)
            self._tg = await stack.enter_async_context(TaskGroup())
            self._ticker = self._tg.create_task(self._heartbeats())
            self._watcher = self._tg.create_task(self._watch_queues(js))
            self._modeler = self._tg.create_task(self._watch_models())
            stack.push_async_callback(self._drain)
            self.service = await add_service(
                self.nc,
                name=self.name,
                version=self.version,
                description=f"{type(self.worker).__name__} serving {', '.join(self.tags)}",
                metadata={"worker": type(self.worker).__name__, "tags": ",".join(self.tags)},
                stats_handler=self._stats_data,
            )
            stack.push_async_callback(self.service.stop)
            for tag in self.tags:
                await self.service.add_endpoint(
                    name=tag,
                    subject=self.subjects.tasks(tag),
                    queue_group=self.subjects.task_queue_group(tag),
                    handler=self._on_request,
                    metadata={"worker_tag": tag, "queue": self.subjects.task_queue(tag)},
                )
            # One tag alone keeps long pulls; several share the free slots with short ones.
            expires = 5.0 if len(self.tags) == 1 else 1.0
            share = max(1, self.max_concurrency // len(self.tags))
            pulls = []
            for tag in self.tags:
                puller = Puller(
                    self.nc,
                    api_subject=self.subjects.task_pull(tag),
                    slots=self.slots,
                    on_task=partial(self._on_pulled, tag),
                    share=lambda: share,
                    expires=expires,
                )
                self._pullers.append(puller)
                pulls.append(self._tg.create_task(puller.run()))
            stack.callback(_cancel_all, pulls)
            self._stack = stack.pop_all()
        return self

    async def _drain(self) -> None:
        """Let in-flight tasks finish for up to ``drain_seconds``; the rest are handed back to
        the queue (queued tasks) or ended with a retryable error (direct requests)."""
        running = [live.run for live in self._running.values()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.drain_seconds)
            self._shutting_down = True
            for run in late:
                run.cancel()
            if late:
                await asyncio.wait(late)
        self._ticker.cancel()
        self._watcher.cancel()
        self._modeler.cancel()

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def _stats_data(self, endpoint: EndpointStats) -> dict[str, Any]:
        s = self.stats
        depth = self.depth.get(endpoint.name, QueueDepth())
        return {
            "in_flight": s.in_flight,
            "capacity": self.max_concurrency,
            "completed": s.completed,
            "failed": s.failed,
            "rejected": s.rejected,
            "bad_requests": s.bad_requests,
            "cancelled": s.cancelled,
            "redelivered": s.redelivered,
            "replayed": s.replayed,
            "finals_answered": self.finals.answered,
            "tag_in_flight": self._in_flight_by_tag[endpoint.name],
            "queue_pending": depth.pending,
            "queue_ack_pending": depth.ack_pending,
        }

    async def _watch_queues(self, js: Any) -> None:
        """Each tag's backlog, for ``$SRV`` stats and Prometheus (KEDA reads the same consumer)."""
        while True:
            for tag in self.tags:
                with contextlib.suppress(Exception):  # a blip in monitoring is not worth a task
                    consumer = self.subjects.task_consumer(tag)
                    info = await js.consumer_info(self.subjects.tasks_stream, consumer, timeout=2)
                    depth = self.depth[tag]
                    depth.pending, depth.ack_pending = info.num_pending or 0, info.num_ack_pending or 0
                    depth.waiting_pulls = info.num_waiting or 0
                    metrics.TASK_QUEUE_PENDING.labels(tag).set(depth.pending)
                    metrics.TASK_QUEUE_ACK_PENDING.labels(tag).set(depth.ack_pending)
            await asyncio.sleep(self.queue_stats_every)

    async def _refresh_models(self) -> None:
        """Ask the worker which models it serves (bounded: a slow backend keeps the last list)."""
        try:
            async with timeout(10.0):
                self.models = list(await self.worker.served_models())
        except Exception as exc:
            log.warning("%s: could not list its served models: %r", type(self.worker).__name__, exc)

    async def _watch_models(self) -> None:
        """Now (a backend still loading must not hold up the start), then every so often."""
        while True:
            await self._refresh_models()
            await asyncio.sleep(self.models_every)

    async def _on_models(self, msg: Msg) -> None:
        """Every replica answers (no queue group): the asker gathers the replies for a moment."""
        if not msg.reply:
            return
        body = {
            "name": self.name,
            "worker": type(self.worker).__name__,
            "tags": self.tags,
            "kinds": self.worker.kinds(),
            "models": self.models,
        }
        with contextlib.suppress(Exception):
            await msg.respond(json.dumps(body).encode())

    # -- intake (micro handlers are awaited one at a time: keep this fast) -----------------

    async def _on_request(self, req: Request) -> None:
        """A direct request (not queued): runs in a free slot or is refused at once."""
        if self.slots.running >= self.max_concurrency:  # promised-but-unfilled pulls yield to it
            self.stats.rejected += 1
            metrics.TASKS_REJECTED.labels(_tag(req.subject), ErrorCode.AT_CAPACITY.value).inc()
            await self._reply_error(
                req,
                "",
                ErrorInfo(
                    code=ErrorCode.AT_CAPACITY,
                    message=f"worker replica at capacity ({self.max_concurrency} tasks in flight)",
                    retryable=True,
                    details={"capacity": self.max_concurrency},
                ),
            )
            return
        assert self._tg is not None
        self.slots.running += 1
        self.stats.in_flight += 1
        self._tg.create_task(self._serve_direct(req))

    def _on_pulled(self, tag: str, msg: Msg) -> None:
        assert self._tg is not None
        self.stats.in_flight += 1
        self._tg.create_task(self._serve_queued(tag, msg))

    async def _on_cancel(self, msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        below = msg.headers.get(HEADER_ATTEMPTS_BELOW) if msg.headers else None
        running = self._running.get(task_id)
        if below is not None:
            # The caller moved on to a newer attempt: stop an older one here, silently (its
            # lease is given up; the queue already handed the task to the newer attempt).
            if running is not None and running.attempt is not None and running.attempt < int(below):
                running.superseded = True
                running.run.cancel()
            return
        if running is None:
            # Not here (yet): if it is still queued and reaches this replica, drop it unrun.
            self._cancelled_early[task_id] = time.monotonic()
            while len(self._cancelled_early) > _CANCELS_REMEMBERED:
                self._cancelled_early.popitem(last=False)
        elif task_id not in self._cancel_requested:
            self.stats.cancelled += 1
            self._cancel_requested.add(task_id)
            running.run.cancel()

    # -- one task --------------------------------------------------------------------------

    async def _serve_direct(self, req: Request) -> None:
        try:
            await self._serve(_tag(req.subject), req.data, req.headers, req.respond, None)
        finally:
            self.stats.in_flight -= 1
            self.slots.running -= 1
            self.slots.changed()

    async def _serve_queued(self, tag: str, msg: Msg) -> None:
        try:
            reply_to = msg.headers.get(HEADER_REPLY_TO) if msg.headers else None
            if not reply_to:
                self.stats.bad_requests += 1
                log.warning("a queued task on %s has no %s header: dropped", msg.subject, HEADER_REPLY_TO)
                await msg.term()
                return
            attempt = msg.metadata.num_delivered
            if await self._replayed(msg, reply_to, None):  # finished here; only its final frame was lost
                return
            if self._cancelled_early or attempt > 1:  # (the id costs a decode: only when it matters)
                task_id = codec.peek_id(msg.data, "task", "id") or ""
                if self._cancelled_early.pop(task_id, None) is not None:
                    self.stats.cancelled += 1
                    await msg.term()  # cancelled while it waited in the queue: never run it
                    return
                live = self._running.get(task_id)
                if live is not None and live.jsmsg is not None:
                    # Redelivered to the replica already running it (a lease lapsed): keep one run.
                    live.jsmsg, live.attempt = msg, attempt
                    return
                if attempt > 1 and task_id:
                    # Finished by a peer whose ack came too late? Its kept final frame answers it.
                    subject = self.subjects.task_final(tag, task_id)
                    kept = await ask_peers(self.nc, subject, reply_to, self.final_lookup_wait)
                    if await self._replayed(msg, reply_to, kept):
                        return
            if attempt > 1:
                self.stats.redelivered += 1
            await self._serve(tag, msg.data, msg.headers, partial(self.nc.publish, reply_to), msg)
        except Exception:
            log.exception("worker host failed taking a queued task")
        finally:
            self.stats.in_flight -= 1
            self._pullers[self.tags.index(tag)].done()

    async def _replayed(self, msg: Msg, reply_to: str, frame: bytes | None) -> bool:
        """Answer a queued task with a final frame already made for its request (``frame``, or
        the one kept here) and ack it: it is not run again."""
        frame = frame or self.finals.get(reply_to)
        if frame is None:
            return False
        self.stats.replayed += 1
        with contextlib.suppress(Exception):  # lost again: the caller asks for it (finals)
            await self.nc.publish(reply_to, frame)
        with contextlib.suppress(Exception):
            await msg.ack()
        return True

    async def _serve(
        self,
        tag: str,
        data: bytes,
        headers: dict[str, str] | None,
        respond: Callable[[bytes], Awaitable[None]],
        jsmsg: Msg | None,
    ) -> None:
        task_id = ""
        attempt = jsmsg.metadata.num_delivered if jsmsg is not None else None
        try:
            try:
                request = codec.decode(TaskRequest, data, max_bytes=self.max_task_bytes)
                task: Task = codec.task_from_request(request)
            except ProtocolError as exc:
                self.stats.bad_requests += 1
                metrics.TASKS_REJECTED.labels(tag, exc.code.value).inc()
                await self._reply_error(
                    respond, codec.peek_id(data, "task", "id") or "", exc.to_info(), attempt, tag=tag
                )
                if jsmsg is not None:
                    await jsmsg.term()
                return
            task_id = task.id
            started = time.perf_counter()
            m = self._metrics(tag)
            m.in_flight.inc()
            self._in_flight_by_tag[tag] += 1
            try:
                await self._traced(respond, headers, request, task, jsmsg)
            finally:
                m.in_flight.dec()
                self._in_flight_by_tag[tag] -= 1
            m.finished(task.status.value).inc()
            m.seconds.observe(time.perf_counter() - started)
            if task.status is TaskStatus.SUCCESS:
                self.stats.completed += 1
            else:
                self.stats.failed += 1
                self._count_error(self.subjects.tasks(tag), task.error)
        except Exception as exc:  # never let one task take the host down
            log.exception("worker host failed serving task %s", task_id)
            self.stats.failed += 1
            error = ErrorInfo(code=ErrorCode.INTERNAL, message=repr(exc))
            await self._reply_error(respond, task_id, error, attempt, tag=tag)
            if jsmsg is not None:
                with contextlib.suppress(Exception):
                    await jsmsg.term()

    async def _traced(
        self,
        respond: Callable[[bytes], Awaitable[None]],
        headers: dict[str, str] | None,
        request: TaskRequest,
        task: Task,
        jsmsg: Msg | None,
    ) -> None:
        """A span per task, child of the caller's (only when a tracer SDK is configured)."""
        if not telemetry.enabled():
            await self._execute(respond, request, task, jsmsg)
            return
        with telemetry.tracer.start_as_current_span(
            f"worker {task.kind}",
            context=telemetry.extract_context(headers),
            attributes={"scaffolding.task_id": task.id, "scaffolding.worker_tag": task.worker_tag},
        ):
            await self._execute(respond, request, task, jsmsg)

    async def _execute(
        self, respond: Callable[[bytes], Awaitable[None]], request: TaskRequest, task: Task, jsmsg: Msg | None
    ) -> None:
        run = asyncio.current_task()
        assert run is not None
        interval = max(self.min_heartbeat, (request.heartbeat_ms or 1000) / 1000)
        live = _Live(respond, task.id, interval, run, jsmsg, max_payload=self.nc.max_payload)
        self._running[task.id] = live
        budget = request.timeout_ms / 1000 if request.timeout_ms else None
        requeue = False
        try:
            if jsmsg is not None:
                await live.send(FrameType.HEARTBEAT)  # "started": the caller's silence clock starts now
            async with timeout(budget):
                if isinstance(task, StreamingTask):
                    await self._stream(task, live)
                else:
                    await self.worker.run_task(task)
        except TimeoutError:
            fail(
                task,
                ErrorInfo(
                    code=ErrorCode.TIMEOUT,
                    message=f"task exceeded its deadline of {budget:.3f}s at the worker",
                    details={"timeout_s": budget},
                ),
            )
        except asyncio.CancelledError:
            if live.superseded or live.lease_lost:
                run.uncancel()
                return  # another attempt owns the task now: no final frame, no ack
            if task.id in self._cancel_requested:
                fail(task, ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by the caller"))
            elif self._shutting_down:
                requeue = live.jsmsg is not None
                fail(
                    task,
                    ErrorInfo(
                        code=ErrorCode.AT_CAPACITY,
                        message="worker replica shutting down" + (": task requeued" if requeue else ""),
                        retryable=True,
                    ),
                )
            else:
                raise
            run.uncancel()
        finally:
            self._running.pop(task.id, None)
            self._cancel_requested.discard(task.id)
        if requeue and live.jsmsg is not None:
            with contextlib.suppress(Exception):
                await live.jsmsg.nak()  # straight back to the queue for another replica
        try:
            too_large = await live.send(FrameType.FINAL, status=task.status, result=task.results(), error=task.error)
        except OutboundBufferLimitError:  # cut off, its buffer full: the kept copy answers instead
            too_large = None
        finally:
            reply_to = live.jsmsg.headers.get(HEADER_REPLY_TO) if live.jsmsg and live.jsmsg.headers else None
            if reply_to and live.final is not None and not requeue:
                self.finals.keep(reply_to, task.id, live.final)
        if too_large is not None:
            fail(task, too_large)
        if live.jsmsg is not None and not requeue:
            with contextlib.suppress(Exception):  # unacked, it is redelivered: the caller ignores a stale attempt
                await live.jsmsg.ack()

    async def _heartbeats(self) -> None:
        """One ticker for every running task: a frame to each that has been quiet too long,
        progress to JetStream for queued ones, and write-offs of lapsed pulls and leases."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.min_heartbeat)
            now = loop.time()
            for puller in self._pullers:
                puller.sweep(now)
            for live in list(self._running.values()):
                if live.jsmsg is not None:
                    if now - live.last_progress > self.queue.ack_wait:
                        # No progress reached JetStream for a whole ack wait (NATS was gone):
                        # the task has been redelivered, so this attempt stops here.
                        live.lease_lost = True
                        live.run.cancel()
                        continue
                    if now - live.last_progress >= self._progress_every and self.nc.is_connected:
                        with contextlib.suppress(Exception):
                            await live.jsmsg.in_progress()
                            live.last_progress = now
                if now - live.last_sent >= live.interval:
                    # A broken connection is the task's own final send to report.
                    with contextlib.suppress(Exception):
                        await live.send(FrameType.HEARTBEAT)
            cutoff = time.monotonic() - self.queue.max_age
            while self._cancelled_early and next(iter(self._cancelled_early.values())) < cutoff:
                self._cancelled_early.popitem(last=False)

    async def _stream(self, task: StreamingTask, live: _Live) -> None:
        """Forward partial results every ``streaming_step`` tokens (cumulative frames)."""
        pending = 0
        async for new_tokens in self.worker.stream_task(task):
            pending += new_tokens
            if pending >= task.streaming_step and not task.end_flag:
                pending = 0
                await live.send(FrameType.PARTIAL, result=task.results())

    def _count_error(self, subject: str, error: ErrorInfo | None) -> None:
        """Count a failed or rejected task in the endpoint's ``$SRV.STATS`` (``num_errors``,
        ``last_error``): nats-py counts only handlers that raise, and ours reply instead."""
        if self.service is None:
            return
        for endpoint in self.service._endpoints:  # nats-py has no public way to count an error
            if endpoint._subject == subject:
                endpoint._num_errors += 1
                endpoint._last_error = f"{error.code.value}: {error.message}"[:200] if error else "failed"

    async def _reply_error(
        self,
        respond: Callable[..., Awaitable[None]] | Request,
        task_id: str,
        error: ErrorInfo,
        attempt: int | None = None,
        *,
        tag: str | None = None,
    ) -> None:
        subject = respond.subject if isinstance(respond, Request) else self.subjects.tasks(tag or self.tags[0])
        self._count_error(subject, error)
        reply = TaskReply(task_id=task_id, status=task_status_for(error.code), error=error, attempt=attempt)
        body = codec.encode(reply)
        headers = {
            HEADER_SERVICE_ERROR: error.message[:200],
            HEADER_SERVICE_ERROR_CODE: str(http_status_for(error.code)),
        }
        send = respond.respond if isinstance(respond, Request) else respond
        try:
            await send(body, headers=headers)
        except Exception:  # no reply subject: nobody to tell, but it is counted
            log.warning("cannot reply to a bad task (no reply subject)")


class _Live:
    """A task being served: where its frames go and when it last showed signs of life."""

    __slots__ = (
        "attempt",
        "final",
        "interval",
        "jsmsg",
        "last_progress",
        "last_sent",
        "lease_lost",
        "max_payload",
        "respond",
        "run",
        "seq",
        "superseded",
        "task_id",
    )

    def __init__(
        self,
        respond: Callable[..., Awaitable[None]],
        task_id: str,
        interval: float,
        run: asyncio.Task[Any],
        jsmsg: Msg | None,
        *,
        max_payload: int = 0,
    ) -> None:
        self.respond, self.task_id, self.interval, self.run = respond, task_id, interval, run
        self.max_payload = max_payload
        self.jsmsg = jsmsg
        self.attempt = jsmsg.metadata.num_delivered if jsmsg is not None else None
        self.seq = 0
        self.last_sent = self.last_progress = asyncio.get_running_loop().time()
        self.superseded = self.lease_lost = False
        self.final: bytes | None = None  # the final frame, once made

    async def send(self, frame: FrameType, **fields: Any) -> ErrorInfo | None:
        """Send one frame; a final frame too large for the bus goes out as a typed error
        instead, which is returned."""
        # A plain map on the hot path; its shape is TaskReply (see proto/).
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "task_id": self.task_id,
            "frame": frame.value,
            "seq": self.seq,
        }
        if self.attempt is not None:
            body["attempt"] = self.attempt
        status, result, error = fields.get("status"), fields.get("result"), fields.get("error")
        if status is not None:
            body["status"] = status.value
        if result:
            body["result"] = result
        if error is not None:
            body["error"] = error.model_dump(mode="json")
        data = codec.pack(body)
        limit = self.max_payload
        if limit and len(data) > limit:  # the reply cannot cross the bus: fail the task, typed
            if frame is not FrameType.FINAL:
                return None  # a partial frame too large is skipped; the final one says why
            error = ErrorInfo(
                code=ErrorCode.PAYLOAD_TOO_LARGE,
                message=f"the task's result of {len(data)} bytes exceeds the server's max_payload of {limit}",
                details={"size": len(data), "limit": limit, "task_id": self.task_id},
            )
            body.pop("result", None)
            body["status"] = task_status_for(error.code).value
            body["error"] = error.model_dump(mode="json")
            data = codec.pack(body)
        else:
            error = None
        self.seq += 1
        self.last_sent = asyncio.get_running_loop().time()
        if frame is FrameType.FINAL:
            self.final = data
        await self.respond(data)
        return error


class _TagMetrics:
    """A tag's metric children, looked up once (``labels()`` is not free on the hot path)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.in_flight = metrics.TASKS_IN_FLIGHT.labels(tag)
        self.seconds = metrics.TASK_SECONDS.labels(tag)
        self._finished: dict[str, Any] = {}

    def finished(self, status: str) -> Any:
        child = self._finished.get(status)
        if child is None:
            child = self._finished[status] = metrics.TASKS.labels(self.tag, status)
        return child


def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()


def _tag(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]
