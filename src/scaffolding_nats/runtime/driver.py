"""Drives controller generators: runs what they yield and resumes them with results."""

from __future__ import annotations

from typing import Any

from .._compat import timeout
from ..errors import BudgetExhausted
from ..proto.tasks import Task
from .affinity import assign_keys
from .collections import TaskCollection
from .context import RequestContext
from .controller import Controller, ControllerGen, ParallelProcess
from .fanout import first_failure_cancels
from .runner import TaskRunner


async def drive(
    controller: Controller,
    gen: ControllerGen,
    runner: TaskRunner,
    ctx: RequestContext,
    observers: tuple[TaskCollection, ...] = (),
    *,
    branch: bool = False,
) -> Any:
    """Run one controller's generator to its end and return its return value.

    ``observers`` are the task collections of every enclosing controller, so hooks see the
    tasks of nested branches too. A ``branch`` of a parallel group counts as waiting for its
    share of a token budget until its first yield (see ``RequestContext.check_budget``).
    """
    observers = observers + tuple(controller.task_collections.values())
    send_exc: BaseException | None = None
    waiting = branch
    try:
        while True:
            try:
                item = gen.throw(send_exc) if send_exc is not None else gen.send(None)
            except StopIteration as stop:
                return stop.value
            if waiting:
                waiting = False
                ctx.pending_branches -= 1
            send_exc = await _step(controller, item, runner, ctx, observers)
    finally:
        if waiting:
            ctx.pending_branches -= 1


async def _step(
    controller: Controller,
    item: Any,
    runner: TaskRunner,
    ctx: RequestContext,
    observers: tuple[TaskCollection, ...],
) -> BaseException | None:
    """Run one yielded item; returns the error to throw back into the generator, if any."""
    if isinstance(item, ParallelProcess):
        await _run_parallel(item, runner, ctx, observers)
    elif isinstance(item, Task):
        await _run_tasks(controller, [item], runner, ctx, observers)
    elif isinstance(item, list) and all(isinstance(t, Task) for t in item):
        await _run_tasks(controller, item, runner, ctx, observers)
    else:
        return TypeError(
            f"{type(controller).__name__} yielded {type(item).__name__}; yield a list of tasks or a ParallelProcess"
        )
    return None


async def _run_tasks(
    controller: Controller,
    tasks: list[Task],
    runner: TaskRunner,
    ctx: RequestContext,
    observers: tuple[TaskCollection, ...],
) -> None:
    if not tasks:
        return
    ctx.check_budget(tasks)
    assign_keys(tasks, ctx.job_id, ctx.lineage)
    for obs in observers:
        obs.before_yield(tasks)
    remaining = ctx.remaining_seconds()
    try:
        async with timeout(remaining):
            await runner.run(tasks, ctx)
    except TimeoutError:
        ctx.account(controller.label, tasks)
        raise BudgetExhausted(
            f"time budget of {ctx.budget.max_seconds}s reached",
            details={"budget": "time", "limit": ctx.budget.max_seconds},
        ) from None
    ctx.account(controller.label, tasks)
    for obs in observers:
        obs.after_yield(tasks)


async def _run_parallel(
    group: ParallelProcess,
    runner: TaskRunner,
    ctx: RequestContext,
    observers: tuple[TaskCollection, ...],
) -> None:
    """Run the branches together. A branch the budget stops ends alone: its siblings keep what
    the budget already gave them and finish (their results are the method's best answer so
    far), then the group ends with that budget's ``BudgetExhausted``. Any other failure of a
    branch cancels its siblings."""
    for obs in observers:
        obs.on_parallel_start(group)
    ctx.pending_branches += len(group)
    stopped: list[BudgetExhausted] = []

    async def branch(ctl: Controller, tasks: list[Task], kwargs: dict[str, Any]) -> None:
        try:
            await drive(ctl, ctl.process(tasks, **kwargs), runner, ctx, observers, branch=True)
        except BudgetExhausted as exc:
            stopped.append(exc)

    async with first_failure_cancels() as tg:
        for ctl, tasks, kwargs in zip(group.controllers, group.tasks_lists, group.kwargs_lists, strict=True):
            tg.create_task(branch(ctl, tasks, kwargs))
    if stopped:
        raise ctx.spent(stopped[0])
    for obs in observers:
        obs.on_parallel_end(group)
