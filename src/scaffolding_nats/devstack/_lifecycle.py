"""One way to hold a local process (or a group of them) for the length of a ``with`` block."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self


class Managed:
    """Gives sync and async context management to a part with blocking ``start``/``stop``;
    the async forms run them in a thread, so a test's event loop never blocks on a process."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
