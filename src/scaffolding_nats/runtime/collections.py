"""Task collections: observers attached to a controller that see every task it and its
sub-controllers yield (nested branches included), e.g. to count tokens or time a method."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ..proto.tasks import GenerationTask, Task
from .controller import Controller, ParallelProcess

C = TypeVar("C", bound=type[Controller])


class TaskCollection:
    """Hooks called by the runtime; override the ones you need. Raising stops the request."""

    def before_yield(self, tasks: list[Task]) -> None:
        pass

    def after_yield(self, tasks: list[Task]) -> None:
        pass

    def on_parallel_start(self, group: ParallelProcess) -> None:
        pass

    def on_parallel_end(self, group: ParallelProcess) -> None:
        pass


def with_task_collection(name: str, factory: Callable[[], TaskCollection]) -> Callable[[C], C]:
    """Class decorator: every instance of the controller, and every clone of it, gets a fresh
    collection ``name`` (so counts never leak between requests)."""

    def decorate(cls: C) -> C:
        factories = dict(getattr(cls, "collection_factories", {}))
        factories[name] = factory
        cls.collection_factories = factories
        return cls

    return decorate


class GenerationTokenCounter(TaskCollection):
    """Counts output tokens of every generation task, in this controller and below."""

    def __init__(self) -> None:
        self.generation_tokens = 0
        self.tasks = 0

    def after_yield(self, tasks: list[Task]) -> None:
        for task in tasks:
            finished = getattr(task, "end_flag", True)
            if isinstance(task, GenerationTask) and task.usage is not None and finished:
                self.generation_tokens += task.usage.completion_tokens
                self.tasks += 1


class TaskTimer(TaskCollection):
    """Wall time spent waiting on yields, and the number of yields."""

    def __init__(self) -> None:
        self.elapsed_s = 0.0
        self.yields = 0
        self._started: float | None = None

    def before_yield(self, tasks: list[Task]) -> None:
        self._started = time.perf_counter()

    def after_yield(self, tasks: list[Task]) -> None:
        if self._started is not None:
            self.elapsed_s += time.perf_counter() - self._started
            self.yields += 1
