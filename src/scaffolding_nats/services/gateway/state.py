"""What the gateway holds while it runs: its NATS connection, a job client, and a short-lived
cache of the methods controllers serve (asked over the bus, never configured twice)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nats.aio.client import Client

from ...client import JobClient


@dataclass
class GatewayState:
    nc: Client
    jobs: JobClient
    request_timeout: float = 600.0
    methods_ttl: float = 5.0
    _methods: list[str] = field(default_factory=list)
    _methods_at: float = 0.0

    async def methods(self) -> list[str]:
        """Methods served right now; raises ``NoController`` when no controller answers."""
        if time.monotonic() - self._methods_at > self.methods_ttl or not self._methods:
            self._methods = await self.jobs.methods(timeout=1.0)
            self._methods_at = time.monotonic()
        return self._methods
