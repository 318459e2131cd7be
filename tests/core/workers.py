"""Workers for runtime tests: they prove concurrency by rendezvous instead of by timing."""

from __future__ import annotations

import asyncio

from scaffolding_nats.proto import GenerationTask, RewardTask, Usage
from scaffolding_nats.runtime import Worker, handles


class Rendezvous(Worker):
    """Each task waits until ``expect`` tasks are in flight at once, then answers. If the
    runtime ran them one by one, the first would time out: concurrency without a stopwatch."""

    def __init__(self, expect: int, wait: float = 5.0) -> None:
        super().__init__()
        self.expect = expect
        self.wait = wait
        self.in_flight = 0
        self.peak = 0
        self.seen: list[str] = []
        self._all_here = asyncio.Event()

    async def _meet(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.expect:
            self._all_here.set()
        try:
            await asyncio.wait_for(self._all_here.wait(), self.wait)
        finally:
            self.in_flight -= 1

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        await self._meet()
        self.seen.append(task.input_str or "")
        task.output_str = (task.input_str or "").upper()
        task.usage = Usage(prompt_tokens=1, completion_tokens=3)

    @handles(RewardTask)
    async def reward(self, task: RewardTask) -> None:
        await self._meet()
        task.scores = [float(len(c)) for c in task.candidates]


class Failing(Worker):
    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        raise RuntimeError("backend exploded")
