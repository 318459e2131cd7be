"""Degrade instead of failing under overload: a job may say it accepts fewer samples when the
task queue is deep, and then runs with them instead of waiting behind the backlog (or timing
out in it). The result says what was applied (``JobResult.metadata["degraded"]``).

A job asks for it in its method parameters (OpenAI ``method_params``), e.g.
``{"sample_num": 8, "degrade": {"queue_depth": 16, "min_samples": 2}}`` (``true``: the
defaults): when at least ``queue_depth`` tasks wait unclaimed in the ``tag`` queue as the job
starts, every fan-out of its method tree (a vote's samples, DeepConf's traces, a beam's width,
a tree's branching) is cut to ``min_samples``.
The backlog is what the queue's JetStream consumer reports (the number KEDA scales on),
read at most once a second per tag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import ScaffoldingError
from ...proto.errors import ErrorCode
from ...proto.subjects import Subjects
from ...runtime.controller import Controller

PARAM = "degrade"
FANOUT = ("sample_num", "num_traces", "beam_width", "branch_factor")
"""The parameters cut: a vote's or best-of-N's samples, DeepConf's traces, beam search's width
and tree of thoughts' branching (nested controllers included)."""
BOUNDED = {"warmup_traces": "num_traces"}
"""Parameters that may not exceed a cut one (DeepConf's warm-up is part of its traces)."""


class DegradePolicy(BaseModel):
    """What a job accepts under load: at ``queue_depth`` or more waiting ``tag`` tasks, its
    samples fall to ``min_samples``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    queue_depth: int = Field(default=8, ge=0)
    min_samples: int = Field(default=2, ge=1)
    tag: str = Field(default="generation", pattern=r"^[A-Za-z0-9_\-]{1,64}$")


def pop_policy(params: Mapping[str, Any]) -> tuple[dict[str, Any], DegradePolicy | None]:
    """The job's method parameters without ``degrade``, and its policy (``None``: never)."""
    rest = dict(params)
    raw = rest.pop(PARAM, None)
    if raw is None or raw is False:
        return rest, None
    try:
        return rest, DegradePolicy() if raw is True else DegradePolicy.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise ScaffoldingError(
            f"params.{PARAM}{'.' + where if where else ''}: {err.get('msg', 'invalid')}",
            code=ErrorCode.INVALID,
            details={"path": f"params.{PARAM}"},
        ) from None


class QueueGauge:
    """Unclaimed tasks of a tag's queue, from its consumer's info, cached for ``ttl`` seconds
    (so a burst of jobs costs one lookup); ``None`` when the queue cannot be read."""

    def __init__(self, js: Any, subjects: Subjects, ttl: float = 1.0, timeout: float = 1.0) -> None:
        self.js = js
        self.subjects = subjects
        self.ttl = ttl
        self.timeout = timeout
        self._seen: dict[str, tuple[float, int | None]] = {}
        self._lock = asyncio.Lock()

    async def pending(self, tag: str) -> int | None:
        async with self._lock:
            at, value = self._seen.get(tag, (float("-inf"), None))
            if time.monotonic() - at < self.ttl:
                return value
            try:
                info = await self.js.consumer_info(
                    self.subjects.tasks_stream, self.subjects.task_consumer(tag), timeout=self.timeout
                )
                value = int(info.num_pending or 0)
            except Exception:  # no queue (yet), or the server is slow: no reason to degrade
                value = None
            self._seen[tag] = (time.monotonic(), value)
            return value


def cut_samples(controller: Controller, to: int) -> list[dict[str, Any]]:
    """Lower every sampling fan-out in the controller tree above ``to`` to ``to``; returns
    what changed (controller label, parameter, from, to)."""
    changes: list[dict[str, Any]] = []
    seen: set[int] = set()

    def visit(node: Controller) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for name in FANOUT:
            value = getattr(node, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > to:
                setattr(node, name, to)
                changes.append({"controller": node.label, "param": name, "from": value, "to": to})
        for name, bound in BOUNDED.items():
            value, limit = getattr(node, name, None), getattr(node, bound, None)
            if isinstance(value, int) and isinstance(limit, int) and value > limit:
                setattr(node, name, limit)
                changes.append({"controller": node.label, "param": name, "from": value, "to": limit})
        for value in vars(node).values():
            for child in value if isinstance(value, list | tuple) else (value,):
                if isinstance(child, Controller):
                    visit(child)

    visit(controller)
    return changes


async def apply(controller: Controller, policy: DegradePolicy | None, gauge: QueueGauge) -> dict[str, Any] | None:
    """Degrade ``controller`` if its job's policy says so under the current backlog; returns the
    ``degraded`` record for the result (``None``: the job runs as asked)."""
    if policy is None:
        return None
    depth = await gauge.pending(policy.tag)
    if depth is None or depth < policy.queue_depth:
        return None
    changes = cut_samples(controller, policy.min_samples)
    if not changes:
        return None
    return {"queue": policy.tag, "queue_depth": depth, "threshold": policy.queue_depth, "changes": changes}
