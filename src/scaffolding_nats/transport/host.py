"""WorkerHost: serves a local Worker on the bus, as a NATS micro service.

Admission is bounded: a replica with ``max_concurrency`` tasks in flight answers new ones at
once with ``at_capacity`` (retryable), so the controller side retries and the queue group
hands the task to another replica instead of it waiting behind a busy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from .. import metrics, telemetry
from .._compat import TaskGroup, timeout
from ..errors import ProtocolError
from ..proto import codec
from ..proto.errors import ErrorCode, ErrorInfo, http_status_for, task_status_for
from ..proto.messages import FrameType, TaskReply, TaskRequest
from ..proto.subjects import HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE, Subjects
from ..proto.tasks import StreamingGenerationTask, Task, TaskStatus
from ..proto.version import DEFAULT_MAX_TASK_BYTES, PROTOCOL_VERSION
from ..runtime.worker import Worker, fail

log = logging.getLogger(__name__)

@dataclass
class HostStats:
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    bad_requests: int = 0
    cancelled: int = 0


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
        self._shutting_down = False
        self.stats = HostStats()
        self._running: dict[str, _Live] = {}
        self._cancel_requested: set[str] = set()
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self.service: Service | None = None

    async def __aenter__(self) -> WorkerHost:
        async with AsyncExitStack() as stack:
            # Unwinds in reverse: intake stops, in-flight tasks drain (still heartbeating and
            # cancellable), then the ticker, the cancel subscription and the worker stop.
            await self.worker.start()
            stack.push_async_callback(self.worker.stop)
            cancel_sub = await self.nc.subscribe(self.subjects.cancel_task_all, cb=self._on_cancel)
            stack.push_async_callback(cancel_sub.unsubscribe)
            self._tg = await stack.enter_async_context(TaskGroup())
            self._ticker = self._tg.create_task(self._heartbeats())
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
                    metadata={"worker_tag": tag},
                )
            self._stack = stack.pop_all()
        return self

    async def _drain(self) -> None:
        """Let in-flight tasks finish for up to ``drain_seconds``; the rest are ended with a
        retryable error, so their callers retry on another replica at once."""
        running = [live.run for live in self._running.values()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.drain_seconds)
            self._shutting_down = True
            for run in late:
                run.cancel()
            if late:
                await asyncio.wait(late)
        self._ticker.cancel()

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def _stats_data(self, endpoint: EndpointStats) -> dict[str, Any]:
        s = self.stats
        return {
            "in_flight": s.in_flight,
            "capacity": self.max_concurrency,
            "completed": s.completed,
            "failed": s.failed,
            "rejected": s.rejected,
            "bad_requests": s.bad_requests,
            "cancelled": s.cancelled,
        }

    # -- intake (micro handlers are awaited one at a time: keep this fast) -----------------

    async def _on_request(self, req: Request) -> None:
        if self.stats.in_flight >= self.max_concurrency:
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
        self.stats.in_flight += 1
        self._tg.create_task(self._serve(req))

    async def _on_cancel(self, msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        running = self._running.get(task_id)
        if running is not None and task_id not in self._cancel_requested:
            self.stats.cancelled += 1
            self._cancel_requested.add(task_id)
            running.run.cancel()

    # -- one task --------------------------------------------------------------------------

    async def _serve(self, req: Request) -> None:
        task_id = ""
        try:
            try:
                request = codec.decode(TaskRequest, req.data, max_bytes=self.max_task_bytes)
                task: Task = codec.task_from_request(request)
            except ProtocolError as exc:
                self.stats.bad_requests += 1
                metrics.TASKS_REJECTED.labels(_tag(req.subject), exc.code.value).inc()
                await self._reply_error(req, codec.peek_id(req.data, "task", "id") or "", exc.to_info())
                return
            task_id = task.id
            tag = _tag(req.subject)
            started = time.perf_counter()
            metrics.TASKS_IN_FLIGHT.labels(tag).inc()
            try:
                await self._traced(req, request, task)
            finally:
                metrics.TASKS_IN_FLIGHT.labels(tag).dec()
            metrics.TASKS.labels(tag, task.status.value).inc()
            metrics.TASK_SECONDS.labels(tag).observe(time.perf_counter() - started)
            if task.status is TaskStatus.SUCCESS:
                self.stats.completed += 1
            else:
                self.stats.failed += 1
                self._count_error(req.subject, task.error)
        except Exception as exc:  # never let one task take the host down
            log.exception("worker host failed serving task %s", task_id)
            self.stats.failed += 1
            await self._reply_error(req, task_id, ErrorInfo(code=ErrorCode.INTERNAL, message=repr(exc)))
        finally:
            self.stats.in_flight -= 1

    async def _traced(self, req: Request, request: TaskRequest, task: Task) -> None:
        """A span per task, child of the caller's (only when a tracer SDK is configured)."""
        if not telemetry.enabled():
            await self._execute(req, request, task)
            return
        with telemetry.tracer.start_as_current_span(
            f"worker {task.kind}",
            context=telemetry.extract_context(req.headers),
            attributes={"scaffolding.task_id": task.id, "scaffolding.worker_tag": task.worker_tag},
        ):
            await self._execute(req, request, task)

    async def _execute(self, req: Request, request: TaskRequest, task: Task) -> None:
        run = asyncio.current_task()
        assert run is not None
        interval = max(self.min_heartbeat, (request.heartbeat_ms or 1000) / 1000)
        live = _Live(req, task.id, interval, run, max_payload=self.nc.max_payload)
        self._running[task.id] = live
        budget = request.timeout_ms / 1000 if request.timeout_ms else None
        try:
            async with timeout(budget):
                if isinstance(task, StreamingGenerationTask):
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
            if task.id in self._cancel_requested:
                fail(task, ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by the caller"))
            elif self._shutting_down:
                fail(
                    task, ErrorInfo(code=ErrorCode.AT_CAPACITY, message="worker replica shutting down", retryable=True)
                )
            else:
                raise
            run.uncancel()
        finally:
            self._running.pop(task.id, None)
            self._cancel_requested.discard(task.id)
        too_large = await live.send(FrameType.FINAL, status=task.status, result=task.results(), error=task.error)
        if too_large is not None:
            fail(task, too_large)

    async def _heartbeats(self) -> None:
        """One ticker for every running task: a frame to each that has been quiet too long."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.min_heartbeat)
            now = loop.time()
            for live in list(self._running.values()):
                if now - live.last_sent >= live.interval:
                    # A broken connection is the task's own final send to report.
                    with contextlib.suppress(Exception):
                        await live.send(FrameType.HEARTBEAT)

    async def _stream(self, task: StreamingGenerationTask, live: _Live) -> None:
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

    async def _reply_error(self, req: Request, task_id: str, error: ErrorInfo) -> None:
        self._count_error(req.subject, error)
        body = codec.encode(
            TaskReply(
                task_id=task_id,
                status=task_status_for(error.code),
                error=error,
            )
        )
        headers = {
            HEADER_SERVICE_ERROR: error.message[:200],
            HEADER_SERVICE_ERROR_CODE: str(http_status_for(error.code)),
        }
        try:
            await req.respond(body, headers=headers)
        except Exception:  # no reply subject: nobody to tell, but it is counted
            log.warning("cannot reply to a bad task on %s (no reply subject)", req.subject)


class _Live:
    """A task being served: where its frames go and when it last showed signs of life."""

    __slots__ = ("interval", "last_sent", "max_payload", "req", "run", "seq", "task_id")

    def __init__(
        self, req: Request, task_id: str, interval: float, run: asyncio.Task[Any], *, max_payload: int = 0
    ) -> None:
        self.req, self.task_id, self.interval, self.run = req, task_id, interval, run
        self.max_payload = max_payload
        self.seq = 0
        self.last_sent = asyncio.get_running_loop().time()

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
        await self.req.respond(data)
        return error


def _tag(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]
