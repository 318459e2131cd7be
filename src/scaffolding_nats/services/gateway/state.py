"""What the gateway holds while it runs: its NATS connection, a job client, and short-lived
caches of the methods controllers serve and of the backend models workers serve (both asked
over the bus, never configured twice)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from nats.aio.client import Client

from ...jobs import JobClient
from ...transport.discovery import worker_infos


@dataclass
class GatewayState:
    nc: Client
    jobs: JobClient
    request_timeout: float = 600.0
    methods_ttl: float = 5.0
    models_ttl: float = 5.0
    models_retry: float = 1.0
    """A model not in the cache is asked for again only if the cache is older than this, so
    requests naming unknown models cannot flood the bus with questions."""
    _methods: list[str] = field(default_factory=list)
    _methods_at: float = 0.0
    _models: list[str] = field(default_factory=list)
    _models_at: float = float("-inf")
    _models_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def methods(self) -> list[str]:
        """Methods served right now; raises ``NoController`` when no controller answers."""
        if time.monotonic() - self._methods_at > self.methods_ttl or not self._methods:
            self._methods = await self.jobs.methods(timeout=1.0)
            self._methods_at = time.monotonic()
        return self._methods

    async def backend_models(self, *, max_age: float | None = None) -> list[str]:
        """Backend models that workers of generation or chat tasks serve: the union of every
        replica's answer (replicas may serve different models). Empty when none answers."""
        max_age = self.models_ttl if max_age is None else max_age
        async with self._models_lock:  # one question on the bus at a time; the others reuse it
            if time.monotonic() - self._models_at > max_age:
                infos = await worker_infos(self.nc, self.jobs.subjects)
                names = {m for info in infos if info.generative for m in info.models}
                self._models, self._models_at = sorted(names), time.monotonic()
        return self._models

    async def serves_model(self, name: str) -> bool:
        """Whether some worker serves ``name``; a miss asks the workers again (a replica
        that just started), at most once per ``models_retry``."""
        if name in await self.backend_models():
            return True
        return name in await self.backend_models(max_age=self.models_retry)
