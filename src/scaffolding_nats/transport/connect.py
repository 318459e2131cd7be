"""A NATS connection with the options every service wants."""

from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)


async def connect(
    servers: str | list[str] = "nats://127.0.0.1:4222", *, name: str = "scaffolding", **options: Any
) -> Client:
    """Connect with reconnects on, errors logged (a slow consumer is reported, not silent)."""
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("connect_timeout", 5)
    options.setdefault("error_cb", _log_error)
    return await nats.connect(servers, name=name, **options)
