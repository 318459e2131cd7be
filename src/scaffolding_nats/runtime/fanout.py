"""The one fan-out policy: concurrent branches where the first failure cancels the rest and is
raised as itself (its typed error code survives; a bare ``TaskGroup`` would raise an
``ExceptionGroup``), so no orphan branch keeps a worker or a backend busy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVar

from .._compat import BaseExceptionGroup, TaskGroup

T = TypeVar("T")


def first_cause(eg: BaseExceptionGroup) -> BaseException:
    """The first failure in a (possibly nested) exception group: the branch's own error."""
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def first_failure_cancels() -> AsyncIterator[TaskGroup]:
    """A ``TaskGroup`` whose first failing task cancels its siblings and is raised as itself
    (chained to the group, which keeps any other failures for the traceback)."""
    try:
        async with TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as eg:
        raise first_cause(eg) from eg


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, under ``first_failure_cancels``: every result in order, or the
    first failure with the rest cancelled."""

    async def wait(aw: Awaitable[T]) -> T:
        return await aw

    async with first_failure_cancels() as tg:
        tasks = [tg.create_task(wait(aw)) for aw in awaitables]
    return [t.result() for t in tasks]
