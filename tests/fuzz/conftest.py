"""A whole stack (worker host, controller service, gateway on uvicorn) on its own event loop in
a background thread, so hypothesis and schemathesis (synchronous) can drive it example by
example without restarting it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import pytest
from nats.aio.client import Client

from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.devstack.stack import local_stack
from scaffolding_nats.proto import Subjects
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.services.gateway import GatewaySettings
from scaffolding_nats.services.gateway.auth import KeyStore
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from ..services.conftest import KEY

T = TypeVar("T")


class Bus:
    def __init__(self, server: NatsServer, prefix: str) -> None:
        self.server, self.subjects = server, Subjects(prefix)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-bus", daemon=True)
        self.stack = AsyncExitStack()
        self.url = ""
        self.headers = {"Authorization": f"Bearer {KEY}"}
        self.nc: Client
        self.controller: ControllerService
        self.host: WorkerHost

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the bus's loop; every wait has a deadline."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _up(self) -> None:
        keys = KeyStore()
        keys.add(KEY, "fuzz")
        settings = GatewaySettings(
            nats_url=self.server.url, prefix=self.subjects.prefix, request_timeout=1.0, api_keys=keys
        )
        workers = [(SyntheticWorker(), ["generation", "reward", "tool_call"])]
        up = await self.stack.enter_async_context(
            local_stack(self.server.url, self.subjects, workers, gateway=settings)
        )
        assert up.controller is not None and up.url is not None
        self.nc, self.host, self.controller, self.url = up.nc, up.hosts[0], up.controller, up.url

    def __enter__(self) -> Bus:
        self.thread.start()
        self.call(self._up())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def bus(nats_server: NatsServer, request: pytest.FixtureRequest) -> Iterator[Bus]:
    with Bus(nats_server, "fz" + str(abs(hash(request.module.__name__)) % 10**8)) as b:
        yield b
