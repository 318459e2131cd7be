"""The worker host's NATS micro service (``$SRV.PING/INFO/STATS``, one endpoint per tag).

nats-py counts an endpoint's errors only when its handler raises; ours answer a failed or
refused task with a typed error frame instead. So the host counts its own errors here and
``$SRV.STATS`` reports them through the service's public ``stats_handler``, which sees each
endpoint's stats before they are sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from ..proto.errors import ErrorInfo


class _Errors:
    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None


class TaskService:
    """``stats_data(endpoint)``: the endpoint's ``data`` in ``$SRV.STATS``."""

    def __init__(
        self,
        nc: Client,
        *,
        name: str,
        version: str,
        description: str,
        metadata: dict[str, str],
        stats_data: Callable[[EndpointStats], dict[str, Any]],
    ) -> None:
        self.nc, self.name, self.version = nc, name, version
        self.description, self.metadata, self.stats_data = description, metadata, stats_data
        self.errors: dict[str, _Errors] = {}  # by endpoint subject
        self.service: Service | None = None

    async def start(self) -> None:
        self.service = await add_service(
            self.nc,
            name=self.name,
            version=self.version,
            description=self.description,
            metadata=self.metadata,
            stats_handler=self._stats,
        )

    async def add_endpoint(
        self,
        *,
        name: str,
        subject: str,
        queue_group: str,
        handler: Callable[[Request], Awaitable[None]],
        metadata: dict[str, str],
    ) -> None:
        assert self.service is not None
        self.errors.setdefault(subject, _Errors())
        await self.service.add_endpoint(
            name=name, subject=subject, queue_group=queue_group, handler=handler, metadata=metadata
        )

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def count_error(self, subject: str, error: ErrorInfo | None) -> None:
        """A failed or refused task, in the endpoint's ``num_errors`` and ``last_error``."""
        errors = self.errors.get(subject)
        if errors is not None:
            errors.count += 1
            errors.last = f"{error.code.value}: {error.message}"[:200] if error else "failed"

    def _stats(self, endpoint: EndpointStats) -> dict[str, Any]:
        errors = self.errors.get(endpoint.subject)
        if errors is not None and errors.count:
            endpoint.num_errors += errors.count
            endpoint.last_error = errors.last
        return self.stats_data(endpoint)
