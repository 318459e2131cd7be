"""A whole stack in one event loop on loopback: worker host, controller service and the
gateway behind a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import nats
import pytest
import uvicorn

from scaffolding_nats.devstack import NatsServer, free_port
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Subjects
from scaffolding_nats.runtime import Worker
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.services.gateway import GatewaySettings, create_app
from scaffolding_nats.services.gateway.auth import KeyStore
from scaffolding_nats.transport import WorkerHost

KEY = "sk-test-" + "a" * 24
"""The tenant ``test``'s API key, made here for the test stack (never in the repository's config)."""


@dataclass
class Stack:
    url: str
    nc: nats.aio.client.Client
    subjects: Subjects
    key: str = KEY

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@asynccontextmanager
async def http_server(app: object) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",  # type: ignore[arg-type]
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def stack(
    nats_server: NatsServer,
    prefix: str,
    workers: dict[str, Worker],
    *,
    controller: bool = True,
    keys: KeyStore | None = None,
) -> AsyncIterator[Stack]:
    subjects = Subjects(prefix)
    nc = await nats.connect(nats_server.url)
    async with AsyncExitStack() as es:
        es.push_async_callback(nc.close)
        for tag, worker in workers.items():
            await es.enter_async_context(WorkerHost(nc, worker, tags=[tag], subjects=subjects))
        if controller:
            await es.enter_async_context(ControllerService(nc, load_registry(), subjects=subjects))
        if keys is None:
            keys = KeyStore()
            keys.add(KEY, "test")
        app = create_app(GatewaySettings(nats_url=nats_server.url, prefix=prefix, request_timeout=30, api_keys=keys))
        url = await es.enter_async_context(http_server(app))
        yield Stack(url=url, nc=nc, subjects=subjects)


@pytest.fixture
def make_stack(nats_server: NatsServer, prefix: str):  # type: ignore[no-untyped-def]
    def make(workers: dict[str, Worker], **kw: Any):  # type: ignore[no-untyped-def]
        return stack(nats_server, prefix, workers, **kw)

    return make
