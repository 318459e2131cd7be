"""Fair sharing of the sandbox's run slots between jobs.

A first-come queue lets one job that sends many long calls hold every slot while another job's
one short call waits behind all of them. Here a freed slot goes to the waiting job that holds
the fewest slots (ties: the job served longest ago, i.e. round-robin), so while others wait a
job holds no more than its share; alone, a job may use every slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class FairSlots:
    """``size`` numbered slots (0 .. size-1) shared between jobs, keyed by any hashable id."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._free = list(range(size - 1, -1, -1))  # pop() hands out the lowest number
        self._held: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[asyncio.Future[int]]] = {}
        self._served: dict[Hashable, int] = {}  # when each job last got a slot (a counter)
        self._clock = 0

    def held(self, job: Hashable) -> int:
        return self._held.get(job, 0)

    def waiting(self) -> int:
        """Calls waiting for a slot, over all jobs."""
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, job: Hashable) -> AsyncIterator[int]:
        """Hold one slot for ``job``; bound the wait with a deadline around this."""
        number = await self.acquire(job)
        try:
            yield number
        finally:
            self.release(job, number)

    async def acquire(self, job: Hashable) -> int:
        if self._free and not self._waiting:
            return self._grant(job)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job, deque()).append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(job, waiter.result())  # granted as the wait was cancelled: pass it on
            else:
                self._forget(job, waiter)
            raise

    def release(self, job: Hashable, number: int) -> None:
        left = self._held[job] - 1
        if left:
            self._held[job] = left
        else:
            del self._held[job]
            if job not in self._waiting:
                self._served.pop(job, None)
        self._free.append(number)
        self._dispatch()

    def _grant(self, job: Hashable) -> int:
        self._clock += 1
        self._served[job] = self._clock
        self._held[job] = self._held.get(job, 0) + 1
        return self._free.pop()

    def _dispatch(self) -> None:
        while self._free and self._waiting:
            job = min(self._waiting, key=lambda j: (self._held.get(j, 0), self._served.get(j, 0)))
            queue = self._waiting[job]
            waiter = queue.popleft()
            if not queue:
                del self._waiting[job]
            if not waiter.done():  # one cancelled but not yet resumed is skipped
                waiter.set_result(self._grant(job))

    def _forget(self, job: Hashable, waiter: asyncio.Future[int]) -> None:
        queue = self._waiting.get(job)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[job]
        if job not in self._waiting and job not in self._held:
            self._served.pop(job, None)
