"""Run the same runtime tests in-process and over NATS: the transport is a seam."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from nats.aio.client import Client

from scaffolding_nats.proto import Subjects
from scaffolding_nats.runtime import Worker
from scaffolding_nats.transport import RemoteWorker, WorkerHost

Bind = Callable[[dict[str, Worker]], Any]


@pytest.fixture(params=["local", "nats"])
async def bind(request: pytest.FixtureRequest, nc: Client, prefix: str) -> AsyncIterator[Bind]:
    """``await bind({tag: worker})`` gives the workers mapping a ScaffoldingLlm should use."""
    async with AsyncExitStack() as stack:
        subjects = Subjects(prefix)

        async def _bind(workers: dict[str, Worker]) -> dict[str, Worker]:
            if request.param == "local":
                return workers
            remote = RemoteWorker(nc, subjects=subjects, heartbeat=0.2)
            for tag, worker in workers.items():
                await stack.enter_async_context(WorkerHost(nc, worker, tags=[tag], subjects=subjects))
            return {tag: remote for tag in workers}

        yield _bind
