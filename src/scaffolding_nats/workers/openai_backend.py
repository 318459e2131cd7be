"""One OpenAI-compatible engine as workers share it: its replicas (an ``EnginePool``), a
concurrency cap per replica, the model name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import openai

from .engine_pool import EnginePool, Lease
from .errors import BackendError
from .openai_errors import BACKEND_EXCEPTIONS, backend_error, bad_body

log = logging.getLogger(__name__)


class OpenAIBackend:
    """HTTP pools and semaphores belong to one event loop; a backend reused from another loop
    (sync ``generate`` after async use) gets fresh ones rather than hanging on stale ones.

    ``max_retries`` are the client's own bounded retries with exponential backoff (on 408,
    409, 429, 5xx and connection errors); ``timeout`` bounds each read of the response, so a
    long generation never times out while tokens flow, yet a stalled server does.

    ``base_url`` is one URL, several (a list, or comma-separated): the replicas of the engine,
    each with ``max_concurrency`` slots. ``resolve_every``, ``affinity_wait``, ``pin_slots``
    and ``slot_offset`` are the pool's (``EnginePool``).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str = "none",
        model: str | None = None,
        *,
        max_concurrency: int = 8,
        max_retries: int = 2,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        client: openai.AsyncOpenAI | None = None,
        resolve_every: float | None = None,
        affinity_wait: float = 0.25,
        pin_slots: bool = False,
        slot_offset: int = 0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        urls = split_urls(base_url)
        self.base_url = urls[0] if len(urls) == 1 else ",".join(urls)
        self.pool = EnginePool(
            urls,
            slots=max_concurrency,
            make_client=self._make_client,
            resolve_every=resolve_every,
            affinity_wait=affinity_wait,
            pin_slots=pin_slots,
            slot_offset=slot_offset,
        )
        self.api_key = api_key
        self.model = model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = openai.Timeout(timeout, connect=connect_timeout)
        self._injected = client
        self._client: openai.AsyncOpenAI | None = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model_lock = asyncio.Lock()
        self._listed: list[str] = []

    def _make_client(self, url: str) -> openai.AsyncOpenAI:
        if self._injected is not None:
            return self._injected
        return openai.AsyncOpenAI(
            base_url=url, api_key=self.api_key, max_retries=self.max_retries, timeout=self.timeout
        )

    def client(self) -> openai.AsyncOpenAI:
        """The client of the first replica (for model listing), bound to the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._model_lock = asyncio.Lock()
        self._client = self.pool.client_of(self.pool.engines[0])
        return self._client

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now, over all replicas (for metrics and tests)."""
        return self.pool.in_flight

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[openai.AsyncOpenAI]:
        """Hold a request slot on some replica (no affinity); yields its client."""
        async with self.lease() as lease:
            yield lease.client

    @asynccontextmanager
    async def lease(self, key: str | None = None, prompt: str = "") -> AsyncIterator[Lease]:
        """Hold a slot on the replica (and engine slot) for ``key``; freed however the block ends."""
        self.client()
        lease = await self.pool.acquire(key, prompt)
        try:
            yield lease
        finally:
            self.pool.release(lease)

    def error(self, exc: BaseException, *, after_retries: bool = True, url: str | None = None) -> BackendError:
        return backend_error(exc, url or self.base_url, attempts=self.max_retries + 1 if after_retries else None)

    async def resolve_model(self, requested: str | None = None) -> str:
        """The task's model, else the configured one, else the server's first listed model."""
        if requested:
            return requested
        if self.model:
            return self.model
        client = self.client()
        async with self._model_lock:
            if self.model is None:
                try:
                    page = await client.models.list()
                except BACKEND_EXCEPTIONS as exc:
                    raise self.error(exc) from exc
                except (AttributeError, TypeError) as exc:  # the client choked on a body of another shape
                    raise bad_body(self.base_url, "a /models body that is not a model list", exc) from exc
                if not isinstance(getattr(page, "data", None), list):
                    raise bad_body(self.base_url, "a /models body that is not a model list")
                if not page.data:
                    raise BackendError(f"backend {self.base_url} lists no models", retryable=False)
                self.model = page.data[0].id
        return self.model

    async def served_models(self) -> list[str]:
        """The configured model, then the server's listed ones (``/models``); when listing
        fails, the configured model and those listed last time (the list is a courtesy to
        whoever asks which models exist, never a reason to fail a task)."""
        try:
            page = await self.client().models.list()
        except BACKEND_EXCEPTIONS as exc:
            log.warning("backend %s: listing models failed: %r", self.base_url, exc)
        else:
            self._listed = [m.id for m in page.data]
        names = [self.model] if self.model else []
        return names + [n for n in self._listed if n not in names]

    async def close(self) -> None:
        """Close our own clients; those bound to another (finished) loop are only dropped."""
        same_loop = self.pool._loop is asyncio.get_running_loop()
        clients = [e.client for e in self.pool.engines if e.client is not None]
        for e in self.pool.engines:
            e.client = None
        self._client, self._loop = self._injected, None
        self.pool._loop = None
        if same_loop:
            for client in clients:
                if client is not self._injected:
                    await client.close()


def split_urls(base_url: str | Sequence[str]) -> list[str]:
    """One URL, a list of them, or a comma-separated string -> the list (order kept, no repeats)."""
    items = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = list(dict.fromkeys(u.strip() for u in items if u.strip()))
    if not urls:
        raise ValueError("base_url names no engine")
    return urls
