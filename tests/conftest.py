"""Shared fixtures: a real nats-server on a free loopback port, and connections to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from scaffolding_nats.devstack import NatsServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    # Every test gets its own prefix, so its own streams; each events stream reserves 1 GiB of
    # max_bytes. Reservations are bookkeeping (the data is tiny): allow a whole session's worth.
    with NatsServer(jetstream=True, max_file_store=1 << 40) as server:
        yield server


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A subject prefix per test, so tests sharing the server never see each other's traffic."""
    return "t" + str(abs(hash(request.node.nodeid)) % 10**10)
