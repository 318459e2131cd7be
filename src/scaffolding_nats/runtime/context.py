"""Per-request state: budget, usage accounting, open streams and the event sink.

The current request is held in a context variable, so a controller (or a parallel branch
of it) can emit partial output without holding a reference to the runtime.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BudgetExhausted
from ..proto.messages import Budget
from ..proto.tasks import SamplingParams, Task, Usage, new_id
from .affinity import Lineage

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class RequestContext:
    budget: Budget = field(default_factory=Budget)
    on_event: EventSink | None = None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    """The caller wants the answer's text as it is made (a job's ``stream`` flag): a method
    whose answer is one model turn (``chat``) streams that turn only then."""
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    usage_by_controller: dict[str, Usage] = field(default_factory=dict)
    num_tasks: int = 0
    open_streams: dict[str, Any] = field(default_factory=dict)
    _counted: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _reserved: dict[str, int] = field(default_factory=dict)
    job_id: str = field(default_factory=new_id)
    """The job's id (the controller's ``Job.id``; a fresh one for a request run locally): its
    tasks carry it to workers, which may share their room fairly between jobs."""
    lineage: Lineage = field(default_factory=Lineage)
    """The job's prompt families, for the affinity keys of its tasks (``runtime.affinity``)."""
    pending_branches: int = 0
    """Branches of running parallel groups that have not yielded yet: each gets a fair share
    of a token budget rather than the first one taking it all."""
    _budget_capped: set[str] = field(default_factory=set)
    cut_by_budget: int = 0
    """Generations that stopped at a ``max_tokens`` the token budget set (not their own):
    the budget shaped the answer even if nothing was refused."""

    # -- budget ----------------------------------------------------------------------------

    def remaining_seconds(self) -> float | None:
        if self.budget.max_seconds is None:
            return None
        return self.budget.max_seconds - (time.monotonic() - self.started)

    def check_budget(self, new_tasks: list[Task]) -> None:
        """Reserve budget for a yield before it is dispatched, or refuse it whole.

        A budget is a hard cap even for tasks launched together (parallel branches): a task
        counts against ``max_tasks`` when it is dispatched, not when it finishes, and every
        generation's ``max_tokens`` is capped by the tokens not yet spent *or reserved* by
        tasks in flight, so concurrent branches cannot overrun it between them."""
        b = self.budget
        fresh = [t for t in new_tasks if t.id not in self._counted]
        if self.sampling_defaults:
            for task in fresh:
                if isinstance(task, SamplingParams):
                    for name, value in self.sampling_defaults.items():
                        if getattr(task, name) is None:
                            setattr(task, name, value)
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            raise BudgetExhausted(
                f"time budget of {b.max_seconds}s reached",
                details={"budget": "time", "limit": b.max_seconds},
            )
        if b.max_tasks is not None and self.num_tasks + len(fresh) > b.max_tasks:
            raise BudgetExhausted(
                f"task budget of {b.max_tasks} reached",
                details={"budget": "tasks", "limit": b.max_tasks, "used": self.num_tasks, "refused": len(fresh)},
            )
        caps: dict[str, int] = {}
        if b.max_tokens is not None:
            left = self.tokens_left()
            capped = [t for t in fresh if isinstance(t, SamplingParams)]
            share = left // (len(capped) + self.pending_branches) if capped else left
            if left <= 0 or (capped and share <= 0):
                raise BudgetExhausted(
                    f"token budget of {b.max_tokens} reached",
                    details={
                        "budget": "tokens",
                        "limit": b.max_tokens,
                        "used": self.usage.completion_tokens,
                        "reserved": sum(self._reserved.values()),
                    },
                )
            for task in capped:
                own = task.max_tokens if isinstance(task, SamplingParams) else None
                caps[task.id] = share if own is None or own > share else own
                if own is None or own > share:
                    self._budget_capped.add(task.id)
        for task in fresh:  # the yield is accepted: reserve what it may spend
            if task.id in caps and isinstance(task, SamplingParams):
                task.max_tokens = caps[task.id]
                self._reserved[task.id] = caps[task.id]
            self._counted[task.id] = (0, 0, 0)
            self.num_tasks += 1

    def tokens_left(self) -> int:
        """Completion tokens neither spent nor reserved by generations in flight."""
        assert self.budget.max_tokens is not None
        in_flight = sum(max(reserved, self._counted.get(tid, (0, 0, 0))[1]) for tid, reserved in self._reserved.items())
        spent_elsewhere = self.usage.completion_tokens - sum(
            self._counted.get(tid, (0, 0, 0))[1] for tid in self._reserved
        )
        return self.budget.max_tokens - spent_elsewhere - in_flight

    # -- accounting ------------------------------------------------------------------------

    def account(self, controller: str, tasks: list[Task]) -> None:
        """Add what these tasks spent since last seen (streamed tasks report cumulatively);
        a finished task's reservation becomes its actual spend."""
        for task in tasks:
            usage: Usage | None = getattr(task, "usage", None)
            prev = self._counted.get(task.id)
            if prev is None:  # ran without check_budget (not dispatched by the driver)
                self.num_tasks += 1
                prev = (0, 0, 0)
            now = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) if usage else prev
            delta = Usage(
                prompt_tokens=max(0, now[0] - prev[0]),
                completion_tokens=max(0, now[1] - prev[1]),
                cached_tokens=max(0, now[2] - prev[2]),
            )
            self._counted[task.id] = now
            self.usage = self.usage + delta
            self.usage_by_controller[controller] = self.usage_by_controller.get(controller, Usage()) + delta
            if getattr(task, "end_flag", True):
                self._reserved.pop(task.id, None)
                if task.id in self._budget_capped:
                    self._budget_capped.discard(task.id)
                    if getattr(task, "finish_reason", None) == "length":
                        self.cut_by_budget += 1

    def spent(self, exc: BudgetExhausted) -> BudgetExhausted:
        """``exc`` with what was used when the request stopped (not when the budget first
        refused a task: tasks already given budget finish and count)."""
        if "used" in exc.details:
            tasks = exc.details.get("budget") == "tasks"
            exc.details["used"] = self.num_tasks if tasks else self.usage.completion_tokens
        if "reserved" in exc.details:
            exc.details["reserved"] = sum(self._reserved.values())
        return exc

    # -- events ----------------------------------------------------------------------------

    def emit(self, event_type: str, **payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(event_type, payload)


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("scaffolding_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def emit_partial(text: str) -> None:
    """Stream a piece of the final answer to the caller (no-op outside a request)."""
    ctx = _current.get()
    if ctx is not None and text:
        ctx.emit("partial", text=text)


def emit_progress(**progress: Any) -> None:
    """Report progress of a method (e.g. a finished branch) to the caller."""
    ctx = _current.get()
    if ctx is not None:
        ctx.emit("progress", **progress)
