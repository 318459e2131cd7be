"""How many copies the durable parts get: SCAF_JS_REPLICAS, else 1 on one server, 3 on a cluster."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js.errors import ServerError

from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport.jetstream import Durability, durability_for, ensure_streams


def test_one_copy_on_a_single_server(nc: Client, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SCAF_JS_REPLICAS", raising=False)
    base = Durability(job_ack_wait=7.0)
    d = durability_for(nc, base)
    assert d.replicas == 1 and d.job_ack_wait == 7.0


def test_the_setting_wins_and_is_checked(nc: Client, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SCAF_JS_REPLICAS", "3")
    assert durability_for(nc).replicas == 3
    monkeypatch.setenv("SCAF_JS_REPLICAS", "9")
    with pytest.raises(ValueError, match=r"1\.\.5"):
        durability_for(nc)


async def test_a_single_server_refuses_three_copies_with_a_clear_error(nc: Client, prefix: str):
    """Three copies need three servers: asking one server for them fails at once, loudly."""
    with pytest.raises(ServerError, match="replicas > 1 not supported in non-clustered mode"):
        await ensure_streams(nc.jetstream(), Subjects(prefix), Durability(replicas=3))
