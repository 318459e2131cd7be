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
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

from nats.aio.client import Client
from nats.errors import OutboundBufferLimitError
from nats.js.errors import Error as JetStreamError
from nats.micro.service import EndpointStats

from .. import metrics, telemetry
from .._compat import TaskGroup
from ..errors import ProtocolError, ScaffoldingError
from ..proto import codec, frames
from ..proto.errors import ErrorCode, ErrorInfo
from ..proto.messages import FrameType
from ..proto.subjects import ANY, Subjects
from ..proto.tasks import StreamingTask, Task, TaskStatus
from ..proto.version import DEFAULT_MAX_TASK_BYTES
from ..runtime.worker import Worker, fail
from .finals import KeptFinals
from .intake import Delivery, Intake
from .jetstream import (
    Durability,
    TaskQueueSettings,
    check_task_queues,
    durability_for,
    provision_task_queues,
    task_queues_missing,
)
from .leases import Lease, Leases
from .micro import TaskService
from .puller import Puller, Slots
from .watch import HostStats, QueueDepth, ServedModels, TagMetrics, stats_data, watch_queues

log = logging.getLogger(__name__)

__all__ = ["HostStats", "QueueDepth", "WorkerHost"]


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
        self.nc, self.worker, self.tags = nc, worker, list(tags)
        self.subjects = subjects or Subjects()
        self.max_concurrency, self.max_task_bytes = max_concurrency, max_task_bytes
        self.name, self.version = name, version
        self.min_heartbeat, self.drain_seconds = min_heartbeat, drain_seconds
        self.durability = durability or durability_for(nc)
        self.queue = queue or TaskQueueSettings()
        self.queue_stats_every = queue_stats_every
        self.served = ServedModels(worker, name=name, tags=self.tags, every=models_every)
        self.provision = provision  # create missing task queues (works without auth; else admin's job)
        self._shutting_down = False
        self.stats = HostStats()
        self.depth: dict[str, QueueDepth] = {tag: QueueDepth() for tag in self.tags}
        self._in_flight_by_tag: Counter[str] = Counter()
        self.slots = Slots(max_concurrency)
        self.pullers: dict[str, Puller] = {}
        self.leases = Leases(tick=min_heartbeat, ack_wait=self.queue.ack_wait, is_connected=lambda: nc.is_connected)
        self.cancel_requested: set[str] = set()  # running tasks their caller cancelled
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self.service = TaskService(
            nc,
            name=name,
            version=version,
            description=f"{type(worker).__name__} serving {', '.join(self.tags)}",
            metadata={"worker": type(worker).__name__, "tags": ",".join(self.tags)},
            stats_data=self._stats_data,
        )
        self._tag_metrics = {tag: TagMetrics(tag) for tag in self.tags}
        self.intake = Intake(self)
        self.finals = KeptFinals()  # so a final frame lost in an outage is sent again, not re-run
        self.final_lookup_wait = 0.5  # how long a redelivered task waits for a peer's kept frame

    @property
    def models(self) -> list[str]:
        return self.served.models

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
            subs = [
                await self.nc.subscribe(self.subjects.cancel_task_all, cb=self.intake.on_cancel),
                await self.nc.subscribe(self.subjects.worker_models, cb=self.served.answer),
            ]
            for tag in self.tags:
                subs.append(await self.nc.subscribe(self.subjects.task_final(tag, ANY), cb=self.finals.answer))
            for sub in subs:
                stack.push_async_callback(sub.unsubscribe)
            self._tg = await stack.enter_async_context(TaskGroup())
            self._background = [
                self._tg.create_task(self.leases.keep(self._sweep)),
                self._tg.create_task(watch_queues(js, self.subjects, self.depth, self.queue_stats_every)),
                self._tg.create_task(self.served.watch()),
            ]
            stack.push_async_callback(self._drain)
            await self.service.start()
            stack.push_async_callback(self.service.stop)
            for tag in self.tags:
                await self.service.add_endpoint(
                    name=tag,
                    subject=self.subjects.tasks(tag),
                    queue_group=self.subjects.task_queue_group(tag),
                    handler=self.intake.on_request,
                    metadata={"worker_tag": tag, "queue": self.subjects.task_queue(tag)},
                )
            # One tag alone keeps long pulls; several share the free slots with short ones.
            expires = 5.0 if len(self.tags) == 1 else 1.0
            share = max(1, self.max_concurrency // len(self.tags))
            pulls = []
            for tag in self.tags:
                puller = self.pullers[tag] = Puller(
                    self.nc,
                    api_subject=self.subjects.task_pull(tag),
                    slots=self.slots,
                    on_task=partial(self.intake.on_pulled, tag),
                    share=lambda: share,
                    expires=expires,
                )
                pulls.append(self._tg.create_task(puller.run()))
            stack.callback(_cancel_all, pulls)
            self._stack = stack.pop_all()
        return self

    async def _drain(self) -> None:
        """Let in-flight tasks finish for up to ``drain_seconds``; the rest are handed back to
        the queue (queued tasks) or ended with a retryable error (direct requests)."""
        running = [lease.run for lease in self.leases.running.values()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.drain_seconds)
            self._shutting_down = True
            for run in late:
                run.cancel()
            if late:
                await asyncio.wait(late)
        _cancel_all(self._background)

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def _stats_data(self, endpoint: EndpointStats) -> dict[str, Any]:
        tag = endpoint.name
        return stats_data(self.stats, self.depth.get(tag, QueueDepth()), self.max_concurrency,
                          self._in_flight_by_tag[tag], self.finals.answered)  # fmt: skip

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the host's task group (drained on exit)."""
        assert self._tg is not None
        self._tg.create_task(work)

    def _sweep(self, now: float) -> None:
        """Each tick: lapsed pulls written off, cancels of tasks that never came forgotten."""
        for puller in self.pullers.values():
            puller.sweep(now)
        self.intake.forget_cancels(time.monotonic() - self.queue.max_age)

    # -- one task --------------------------------------------------------------------------

    async def serve(self, tag: str, data: bytes, headers: dict[str, str] | None, delivery: Delivery) -> None:
        task_id = ""
        try:
            try:
                request, task = frames.read_request(data, max_bytes=self.max_task_bytes)
            except ProtocolError as exc:
                self.stats.bad_requests += 1
                metrics.TASKS_REJECTED.labels(tag, exc.code.value).inc()
                await self.reply_error(delivery, tag, codec.peek_id(data, "task", "id") or "", exc.to_info())
                await delivery.refuse()
                return
            task_id = task.id
            started = time.perf_counter()
            m = self._tag_metrics[tag]
            m.in_flight.inc()
            self._in_flight_by_tag[tag] += 1
            try:
                if telemetry.enabled():
                    await self._traced(delivery, headers, request, task)
                else:
                    await self._execute(delivery, request, task)
            finally:
                m.in_flight.dec()
                self._in_flight_by_tag[tag] -= 1
            m.finished(task.status.value).inc()
            m.seconds.observe(time.perf_counter() - started)
            if task.status is TaskStatus.SUCCESS:
                self.stats.completed += 1
            else:
                self.stats.failed += 1
                self.service.count_error(self.subjects.tasks(tag), task.error)
        except Exception as exc:  # never let one task take the host down
            log.exception("worker host failed serving task %s", task_id)
            self.stats.failed += 1
            await self.reply_error(delivery, tag, task_id, ErrorInfo(code=ErrorCode.INTERNAL, message=repr(exc)))
            await delivery.refuse()

    async def _traced(
        self, delivery: Delivery, headers: dict[str, str] | None, request: frames.Request, task: Task
    ) -> None:
        """A span per task, child of the caller's (only when a tracer SDK is configured)."""
        with telemetry.tracer.start_as_current_span(
            f"worker {task.kind}",
            context=telemetry.extract_context(headers),
            attributes={"scaffolding.task_id": task.id, "scaffolding.worker_tag": task.worker_tag},
        ):
            await self._execute(delivery, request, task)

    async def _execute(self, delivery: Delivery, request: frames.Request, task: Task) -> None:
        run = asyncio.current_task()
        assert run is not None
        interval = max(self.min_heartbeat, (request.heartbeat_ms or 1000) / 1000)
        budget = request.timeout_ms / 1000 if request.timeout_ms else None
        lease = Lease(delivery, task.id, interval, run, max_payload=self.nc.max_payload, budget=budget)
        self.leases.running[task.id] = lease
        if delivery.renews:
            asyncio.get_running_loop().call_soon(lease.say_started, self.spawn)
        requeue = False
        try:
            if isinstance(task, StreamingTask):
                await self._stream(task, lease)
            else:
                await self.worker.run_task(task)
        except asyncio.CancelledError:
            if lease.superseded or lease.lease_lost:
                run.uncancel()
                return  # another attempt owns the task now: no final frame, no ack
            if lease.timed_out:
                fail(
                    task,
                    ErrorInfo(
                        code=ErrorCode.TIMEOUT,
                        message=f"task exceeded its deadline of {budget:.3f}s at the worker",
                        details={"timeout_s": budget},
                    ),
                )
            elif task.id in self.cancel_requested:
                fail(task, ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by the caller"))
            elif self._shutting_down:
                requeue = delivery.renews
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
            self.leases.running.pop(task.id, None)
            self.cancel_requested.discard(task.id)
        if requeue:
            await delivery.hand_back()  # straight back to the queue for another replica
        try:
            too_large = await lease.send_final(task.status, task.results(), task.error)
        except OutboundBufferLimitError:  # cut off, its buffer full: the kept copy answers instead
            too_large = None
        finally:
            reply_to = delivery.reply_to
            if reply_to and lease.final is not None and not requeue:
                self.finals.keep(reply_to, task.id, lease.final)
        if too_large is not None:
            fail(task, too_large)
        if not requeue:
            await delivery.done()

    async def _stream(self, task: StreamingTask, lease: Lease) -> None:
        """Forward partial results every ``streaming_step`` tokens (cumulative frames)."""
        pending = 0
        async for new_tokens in self.worker.stream_task(task):
            pending += new_tokens
            if pending >= task.streaming_step and not task.end_flag:
                pending = 0
                await lease.send(FrameType.PARTIAL, result=task.results())

    async def reply_error(self, delivery: Delivery, tag: str, task_id: str, error: ErrorInfo) -> None:
        self.service.count_error(self.subjects.tasks(tag), error)
        body, headers = frames.error_reply(task_id, error, delivery.attempt)
        try:
            await delivery.send(body, headers)
        except Exception:  # no reply subject: nobody to tell, but it is counted
            log.warning("cannot reply to a bad task (no reply subject)")


def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
