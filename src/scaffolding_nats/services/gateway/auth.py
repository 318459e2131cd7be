"""API keys for the gateway: every ``/v1`` request needs one (``Authorization: Bearer <key>``,
as OpenAI clients send it, or ``X-API-Key``). A key names a *tenant*, whose jobs it alone can
read and cancel, and may carry a rate limit (requests per minute) and a concurrency cap.

Keys come from a file (``SCAF_API_KEYS_FILE``, e.g. a mounted Secret) or the environment
(``SCAF_API_KEYS``), one per line (the format: ``security/api_keys.py``)::

    # tenant   key (or sha256:<hex of the key>)   [rpm=<requests per minute>] [concurrency=<n>]
    acme       sk-scaf-3f9c...                     rpm=600 concurrency=8

None are in the repository; ``python -m scaffolding_nats.security api-key`` makes one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...proto.subjects import check_token
from ...security.api_keys import KeyFileError, new_key, parse_key_lines

__all__ = ["ApiKey", "ApiKeyMiddleware", "KeyFileError", "KeyStore", "new_key", "tenant_of"]

PROTECTED_PREFIX = "/v1/"
_INVALID, _LIMIT = "invalid_request_error", "requests"  # OpenAI's error types for 401 and 429


@dataclass
class ApiKey:
    tenant: str
    rpm: float | None = None
    concurrency: int | None = None
    # Live counters, per key:
    tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def take(self) -> bool:
        """One request against the rate limit (a token bucket of one minute's allowance)."""
        if self.rpm is None:
            return True
        now = time.monotonic()
        self.tokens = min(self.rpm, self.tokens + (now - self.refilled) * self.rpm / 60.0)
        self.refilled = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Keys by their SHA-256, so a key file may hold digests instead of the keys."""

    def __init__(self) -> None:
        self._by_digest: dict[str, ApiKey] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def add(self, key_or_digest: str, tenant: str, *, rpm: float | None = None, concurrency: int | None = None) -> None:
        check_token(tenant, "tenant")
        digest = key_or_digest[7:] if key_or_digest.startswith("sha256:") else _digest(key_or_digest)
        self._by_digest[digest] = ApiKey(tenant, rpm=rpm, concurrency=concurrency, tokens=rpm or 0.0)

    def lookup(self, key: str) -> ApiKey | None:
        return self._by_digest.get(_digest(key))

    @classmethod
    def parse(cls, text: str, *, source: str = "<keys>") -> KeyStore:
        store = cls()
        for line in parse_key_lines(text, source=source):
            store.add(line.key, line.tenant, rpm=line.rpm, concurrency=line.concurrency)
        return store

    @classmethod
    def load(cls, *, file: str | None = None, inline: str | None = None) -> KeyStore:
        store = cls()
        for text, source in _sources(file, inline):
            store._by_digest.update(cls.parse(text, source=source)._by_digest)
        return store


def _sources(file: str | None, inline: str | None) -> Iterable[tuple[str, str]]:
    if file:
        yield Path(file).read_text(), file
    if inline:
        yield inline, "SCAF_API_KEYS"


def tenant_of(scope_or_request: Any) -> str | None:
    """The tenant of the request's key (None where the gateway runs without keys)."""
    scope = scope_or_request if isinstance(scope_or_request, dict) else scope_or_request.scope
    tenant: str | None = scope.get("state", {}).get("tenant")
    return tenant


def _error(status: int, message: str, code: str, kind: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return status, json.dumps(body).encode()


class ApiKeyMiddleware:
    """401 without a valid key, 429 past a key's rate or concurrency; the key's tenant goes
    into the request state. Plain ASGI, so a streamed response counts until its last byte."""

    def __init__(self, app: ASGIApp, *, keys: KeyStore | None) -> None:
        self.app = app
        self.keys = keys  # None: no keys at all (explicitly anonymous gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.keys is None or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        key = self.keys.lookup(_presented_key(scope))
        if key is None:
            await _reply(send, *_error(401, "Incorrect or missing API key.", "invalid_api_key", _INVALID))
            return
        if not key.take():
            await _reply(
                send,
                *_error(429, f"Rate limit of {key.rpm:g} requests per minute reached.", "rate_limit_exceeded", _LIMIT),
                retry_after=max(1, int(60 / (key.rpm or 1))),
            )
            return
        if key.concurrency is not None and key.in_flight >= key.concurrency:
            await _reply(
                send,
                *_error(
                    429,
                    f"At most {key.concurrency} concurrent requests per key.",
                    "concurrency_limit_exceeded",
                    _LIMIT,
                ),
                retry_after=1,
            )
            return
        scope.setdefault("state", {})["tenant"] = key.tenant
        key.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            key.in_flight -= 1


def _presented_key(scope: Scope) -> str:
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


async def _reply(send: Send, status: int, body: bytes, *, retry_after: int | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="scaffolding"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
