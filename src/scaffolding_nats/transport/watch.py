"""What a worker host counts and watches: its tasks' counters (``$SRV.STATS`` data, Prometheus),
each tag's queue depth, and the models its worker serves (answered on ``<prefix>.worker.models``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from .. import metrics
from .._compat import timeout
from ..proto.subjects import Subjects
from ..runtime.worker import Worker

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


def stats_data(
    s: HostStats, depth: QueueDepth, capacity: int, tag_in_flight: int, finals_answered: int
) -> dict[str, Any]:
    """An endpoint's ``data`` in ``$SRV.STATS``."""
    return {
        "in_flight": s.in_flight,
        "capacity": capacity,
        "completed": s.completed,
        "failed": s.failed,
        "rejected": s.rejected,
        "bad_requests": s.bad_requests,
        "cancelled": s.cancelled,
        "redelivered": s.redelivered,
        "replayed": s.replayed,
        "finals_answered": finals_answered,
        "tag_in_flight": tag_in_flight,
        "queue_pending": depth.pending,
        "queue_ack_pending": depth.ack_pending,
    }


class TagMetrics:
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


@dataclass
class QueueDepth:
    """A tag's work queue as its consumer last reported it (refreshed every few seconds)."""

    pending: int = 0  # queued, not yet taken by any replica
    ack_pending: int = 0  # taken by some replica, not yet done
    waiting_pulls: int = 0


async def watch_queues(js: Any, subjects: Subjects, depth: dict[str, QueueDepth], every: float) -> None:
    """Each tag's backlog, for ``$SRV`` stats and Prometheus (KEDA reads the same consumer)."""
    while True:
        for tag, d in depth.items():
            with contextlib.suppress(Exception):  # a blip in monitoring is not worth a task
                info = await js.consumer_info(subjects.tasks_stream, subjects.task_consumer(tag), timeout=2)
                d.pending, d.ack_pending = info.num_pending or 0, info.num_ack_pending or 0
                d.waiting_pulls = info.num_waiting or 0
                metrics.TASK_QUEUE_PENDING.labels(tag).set(d.pending)
                metrics.TASK_QUEUE_ACK_PENDING.labels(tag).set(d.ack_pending)
        await asyncio.sleep(every)


class ServedModels:
    """The worker's served models: asked now (a backend still loading must not hold up the
    start), then every ``every`` seconds; every replica answers an ask (no queue group)."""

    def __init__(self, worker: Worker, *, name: str, tags: Sequence[str], every: float) -> None:
        self.worker, self.name, self.tags, self.every = worker, name, list(tags), every
        self.models: list[str] = []

    async def refresh(self) -> None:
        """Bounded: a slow backend keeps the last list."""
        try:
            async with timeout(10.0):
                self.models = list(await self.worker.served_models())
        except Exception as exc:
            log.warning("%s: could not list its served models: %r", type(self.worker).__name__, exc)

    async def watch(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.every)

    async def answer(self, msg: Msg) -> None:
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
