"""A whole stack in one event loop on loopback: worker host, controller service and the
gateway behind a real uvicorn server on a free port (``devstack.stack`` wires them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import nats
import pytest

from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.devstack.stack import http_server, local_stack
from scaffolding_nats.proto import Subjects
from scaffolding_nats.runtime import Worker
from scaffolding_nats.services.gateway import GatewaySettings
from scaffolding_nats.services.gateway.auth import KeyStore

__all__ = ["KEY", "Stack", "http_server", "stack"]

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
async def stack(
    nats_server: NatsServer,
    prefix: str,
    workers: dict[str, Worker],
    *,
    controller: bool = True,
    keys: KeyStore | None = None,
) -> AsyncIterator[Stack]:
    if keys is None:
        keys = KeyStore()
        keys.add(KEY, "test")
    gateway = GatewaySettings(nats_url=nats_server.url, prefix=prefix, request_timeout=30, api_keys=keys)
    hosted = [(worker, [tag]) for tag, worker in workers.items()]
    async with local_stack(nats_server.url, Subjects(prefix), hosted, controller=controller, gateway=gateway) as s:
        assert s.url is not None
        yield Stack(url=s.url, nc=s.nc, subjects=s.subjects)


@pytest.fixture
def make_stack(nats_server: NatsServer, prefix: str):  # type: ignore[no-untyped-def]
    def make(workers: dict[str, Worker], **kw: Any):  # type: ignore[no-untyped-def]
        return stack(nats_server, prefix, workers, **kw)

    return make
