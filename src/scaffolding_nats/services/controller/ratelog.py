"""A log line per event until it repeats too often, then a count: a flood of bad jobs (a fuzzer,
a broken client) must not flood the controller's log, while the first few still show why."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most ``burst`` lines per ``period`` seconds; the rest are counted and reported in one
    line when the next period's first event is logged. ``clock`` is injectable for tests."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.WARNING,
        burst: int = 5,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.level, self.burst, self.period, self.clock = logger, level, burst, period, clock
        self._window_start = -float("inf")
        self._logged = 0
        self.suppressed = 0  # in the current period, not yet reported

    def log(self, msg: str, *args: object) -> None:
        now = self.clock()
        if now - self._window_start >= self.period:
            if self.suppressed:
                self.logger.log(
                    self.level, "%d more like this in the last %.0fs were not logged", self.suppressed, self.period
                )
            self._window_start, self._logged, self.suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.log(self.level, msg, *args)
        else:
            self.suppressed += 1
