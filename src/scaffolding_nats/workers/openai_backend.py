"""One OpenAI-compatible endpoint as workers share it: a client, a concurrency cap, the model name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai

from .errors import BackendError
from .openai_errors import BACKEND_EXCEPTIONS, backend_error, bad_body

log = logging.getLogger(__name__)


class OpenAIBackend:
    """HTTP pools and semaphores belong to one event loop; a backend reused from another loop
    (sync ``generate`` after async use) gets fresh ones rather than hanging on stale ones.

    ``max_retries`` are the client's own bounded retries with exponential backoff (on 408,
    409, 429, 5xx and connection errors); ``timeout`` bounds each read of the response, so a
    long generation never times out while tokens flow, yet a stalled server does.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str = "none",
        model: str | None = None,
        *,
        max_concurrency: int = 8,
        max_retries: int = 2,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.base_url = base_url
        self.api_key = api_key
        self.model = model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = openai.Timeout(timeout, connect=connect_timeout)
        self._injected = client
        self._client: openai.AsyncOpenAI | None = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem = asyncio.Semaphore(max_concurrency)
        self._model_lock = asyncio.Lock()
        self._in_flight = 0
        self._listed: list[str] = []

    def client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None:
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._model_lock = asyncio.Lock()
            if self._injected is None:
                self._client = openai.AsyncOpenAI(
                    base_url=self.base_url,
                    api_key=self.api_key,
                    max_retries=self.max_retries,
                    timeout=self.timeout,
                )
        assert self._client is not None
        return self._client

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (for metrics and tests)."""
        return self._in_flight

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[openai.AsyncOpenAI]:
        """Hold one of ``max_concurrency`` request slots; yields the loop's client."""
        client = self.client()
        async with self._sem:
            self._in_flight += 1
            try:
                yield client
            finally:
                self._in_flight -= 1

    def error(self, exc: BaseException, *, after_retries: bool = True) -> BackendError:
        return backend_error(exc, self.base_url, attempts=self.max_retries + 1 if after_retries else None)

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
        """Close our own client; one bound to another (finished) loop is only dropped."""
        client, self._client = self._client, self._injected
        same_loop = self._loop is asyncio.get_running_loop()
        self._loop = None
        if client is not None and client is not self._injected and same_loop:
            await client.close()
