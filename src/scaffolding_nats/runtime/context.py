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
from ..proto.tasks import GenerationTask, SamplingParams, Task, Usage

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class RequestContext:
    budget: Budget = field(default_factory=Budget)
    on_event: EventSink | None = None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    usage_by_controller: dict[str, Usage] = field(default_factory=dict)
    num_tasks: int = 0
    open_streams: dict[str, Any] = field(default_factory=dict)
    _counted: dict[str, tuple[int, int]] = field(default_factory=dict)

    # -- budget ----------------------------------------------------------------------------

    def remaining_seconds(self) -> float | None:
        if self.budget.max_seconds is None:
            return None
        return self.budget.max_seconds - (time.monotonic() - self.started)

    def check_budget(self, new_tasks: list[Task]) -> None:
        """Raise before work that would break a budget; clamp generations to tokens left."""
        b = self.budget
        fresh = [t for t in new_tasks if t.id not in self._counted]
        if self.sampling_defaults:
            for task in fresh:
                if isinstance(task, SamplingParams):
                    for name, value in self.sampling_defaults.items():
                        if getattr(task, name) is None:
                            setattr(task, name, value)
        if b.max_tasks is not None and self.num_tasks + len(fresh) > b.max_tasks:
            raise BudgetExhausted(
                f"task budget of {b.max_tasks} reached",
                details={"budget": "tasks", "limit": b.max_tasks, "used": self.num_tasks},
            )
        if b.max_tokens is not None:
            left = b.max_tokens - self.usage.completion_tokens
            if left <= 0:
                raise BudgetExhausted(
                    f"token budget of {b.max_tokens} reached",
                    details={"budget": "tokens", "limit": b.max_tokens, "used": self.usage.completion_tokens},
                )
            for task in fresh:
                if isinstance(task, GenerationTask) and (task.max_tokens is None or task.max_tokens > left):
                    task.max_tokens = left
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            raise BudgetExhausted(
                f"time budget of {b.max_seconds}s reached",
                details={"budget": "time", "limit": b.max_seconds},
            )

    # -- accounting ------------------------------------------------------------------------

    def account(self, controller: str, tasks: list[Task]) -> None:
        """Add what these tasks spent since last seen (streamed tasks report cumulatively)."""
        for task in tasks:
            usage: Usage | None = getattr(task, "usage", None)
            prev = self._counted.get(task.id)
            if prev is None:
                self.num_tasks += 1
                prev = (0, 0)
            now = (usage.prompt_tokens, usage.completion_tokens) if usage else prev
            delta = Usage(prompt_tokens=max(0, now[0] - prev[0]), completion_tokens=max(0, now[1] - prev[1]))
            self._counted[task.id] = now
            self.usage = self.usage + delta
            self.usage_by_controller[controller] = self.usage_by_controller.get(controller, Usage()) + delta

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
