"""Run one request: a controller, a prompt, a budget, and an event sink, to an outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import BudgetExhausted, ControllerError, ScaffoldingError
from ..proto.messages import Budget, JobResult, StopReason
from ..proto.tasks import Usage
from .context import EventSink, RequestContext, _current
from .controller import Controller, Output
from .driver import drive
from .runner import TaskRunner, close_streams

_STOP_REASONS: dict[str, StopReason] = {"tokens": "budget_tokens", "tasks": "budget_tasks", "time": "budget_time"}


@dataclass
class Outcome:
    output: Output
    usage: Usage
    usage_by_controller: dict[str, Usage]
    num_tasks: int
    elapsed_s: float
    stop_reason: StopReason = "completed"

    def to_result(self) -> JobResult:
        return JobResult(
            text=self.output.text,
            answer=self.output.answer,
            finish_reason=self.output.finish_reason,
            stop_reason=self.stop_reason,
            tool_calls=self.output.tool_calls,
            usage=self.usage,
            usage_by_controller=self.usage_by_controller,
            num_tasks=self.num_tasks,
            elapsed_s=self.elapsed_s,
            metadata=self.output.metadata,
        )


async def run_request(
    controller: Controller,
    runner: TaskRunner,
    *,
    prompt: Any,
    kwargs: dict[str, Any] | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    sampling_defaults: dict[str, Any] | None = None,
    job_id: str | None = None,
    stream: bool = False,
) -> Outcome:
    """Drive ``controller.generate(prompt, **kwargs)``.

    ``sampling_defaults`` fill unset sampling fields of every generation the method yields;
    ``stream``: the caller follows partial text (``RequestContext.stream``).
    A budget that runs out ends the request with the controller's best answer so far when it
    offers one (``best_so_far()``); any other controller error becomes ``ControllerError``.
    """
    ctx = RequestContext(
        budget=budget or Budget(), on_event=on_event, sampling_defaults=sampling_defaults or {}, stream=stream
    )
    if job_id is not None:
        ctx.job_id = job_id
    token = _current.set(ctx)
    stop_reason: StopReason = "completed"
    try:
        try:
            output = await drive(controller, controller.generate(prompt, **(kwargs or {})), runner, ctx)
        except BudgetExhausted as exc:
            output = controller.best_so_far()
            if output is None:
                ctx.spent(exc)
                raise
            stop_reason = _STOP_REASONS.get(str(exc.details.get("budget")), "budget_tokens")
            output.metadata.setdefault("budget", ctx.spent(exc).details)
        except ScaffoldingError:
            raise
        except Exception as exc:
            raise ControllerError(
                f"{controller.label} raised {type(exc).__name__}: {exc}",
                details={"controller": controller.label, "exception": type(exc).__name__},
            ) from exc
        if not isinstance(output, Output):
            raise ControllerError(
                f"{controller.label}.generate returned {type(output).__name__}, not Output",
                details={"controller": controller.label},
            )
        if stop_reason == "completed" and ctx.cut_by_budget:
            # Nothing was refused, but generations stopped at the share of tokens the budget
            # gave them: the answer is what the budget allowed, and the result says so.
            stop_reason = "budget_tokens"
            output.metadata.setdefault(
                "budget",
                {
                    "budget": "tokens",
                    "limit": ctx.budget.max_tokens,
                    "used": ctx.usage.completion_tokens,
                    "cut_short": ctx.cut_by_budget,
                },
            )
    finally:
        _current.reset(token)
        await close_streams(ctx)
    return Outcome(
        output=output,
        usage=ctx.usage,
        usage_by_controller=ctx.usage_by_controller,
        num_tasks=ctx.num_tasks,
        elapsed_s=time.monotonic() - ctx.started,
        stop_reason=stop_reason,
    )
