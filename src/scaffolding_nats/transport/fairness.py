"""Fair admission of tasks into a tag's shared work queue.

The queue is FIFO across every controller and job. Were a job to queue all its tasks at once,
a 256-sample vote would put a later job's single task behind all 256. So each job keeps at most
``window`` tasks queued-but-not-started per tag; its next task enters when one of its own
starts. A new job's first task thus waits behind at most ``window`` tasks of each other job:
the queue interleaves jobs, and nothing is dropped or rejected, only held back locally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class _Lane:
    __slots__ = ("sem", "users")

    def __init__(self, window: int) -> None:
        self.sem = asyncio.Semaphore(window)
        self.users = 0


class FairAdmission:
    """Per (job, tag) windows. ``enter`` waits for room in the job's window; ``leave`` frees it
    (called when the task starts at a worker, or ends before starting)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._lanes: dict[Hashable, _Lane] = {}

    def waiting(self) -> int:
        """Tasks held back locally (their job's window is full), over all lanes."""
        return sum(max(0, lane.users - self.window) for lane in self._lanes.values())

    async def enter(self, key: Hashable) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(self.window)
        lane.users += 1
        try:
            await lane.sem.acquire()
        except BaseException:
            self._release_user(key, lane)
            raise

    def leave(self, key: Hashable) -> None:
        lane = self._lanes.get(key)
        if lane is None:  # never entered: nothing to free
            return
        lane.sem.release()
        self._release_user(key, lane)

    def _release_user(self, key: Hashable, lane: _Lane) -> None:
        lane.users -= 1
        if lane.users == 0:
            del self._lanes[key]
