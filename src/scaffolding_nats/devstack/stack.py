"""The system in one event loop, for tests and benchmarks: worker hosts, the controller service
and (optionally) the gateway behind a real uvicorn server on a free loopback port, all on one
NATS connection to a running server. One place wires them, so the tests' fixtures and the
benchmarks run the same stack; each caller says only what differs (its workers, limits, keys).

Usage::

    async with local_stack(server.url, Subjects("bench"), [(worker, ["generation"])]) as stack:
        result = await JobClient(stack.nc, subjects=stack.subjects).run(job)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nats
from nats.aio.client import Client

from ..methods.registry import MethodRegistry, load_registry
from ..proto import Subjects
from ..runtime import Worker
from ..services.controller import ControllerService
from ..transport import WorkerHost
from .nats_server import free_port

if TYPE_CHECKING:
    from ..services.gateway import GatewaySettings


@dataclass
class LocalStack:
    """What a test or a benchmark needs of the running stack."""

    nc: Client
    subjects: Subjects
    hosts: list[WorkerHost] = field(default_factory=list)
    """One per ``(worker, tags)`` given, in order."""
    controller: ControllerService | None = None
    url: str | None = None
    """The gateway's base URL, when it runs."""


@asynccontextmanager
async def http_server(app: object) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_level="warning",
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
async def local_stack(
    nats_url: str,
    subjects: Subjects,
    workers: Iterable[tuple[Worker, Sequence[str]]] = (),
    *,
    controller: bool = True,
    registry: MethodRegistry | None = None,
    controller_options: Mapping[str, Any] | None = None,
    gateway: GatewaySettings | None = None,
    connect_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[LocalStack]:
    """Connect, host every worker under its tags, run the controller (``registry``: the
    default methods unless given; ``controller_options``: ControllerService's keywords) and,
    given its settings, the gateway; all stop in reverse order, the connection last."""
    nc = await nats.connect(nats_url, **dict(connect_options or {}))
    async with AsyncExitStack() as es:
        es.push_async_callback(nc.close)
        stack = LocalStack(nc, subjects)
        for worker, tags in workers:
            stack.hosts.append(await es.enter_async_context(WorkerHost(nc, worker, tags=list(tags), subjects=subjects)))
        if controller:
            service = ControllerService(
                nc,
                registry if registry is not None else load_registry(),
                subjects=subjects,
                **dict(controller_options or {}),
            )
            stack.controller = await es.enter_async_context(service)
        if gateway is not None:
            from ..services.gateway import create_app

            stack.url = await es.enter_async_context(http_server(create_app(gateway)))
        yield stack
