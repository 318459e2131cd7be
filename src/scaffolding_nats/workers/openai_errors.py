"""Exceptions of the ``openai`` client → typed ``BackendError``."""

from __future__ import annotations

import json
from typing import Any

import openai

from .errors import BackendError

try:  # openai >= 3 ships on httpx2; older releases on httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

TransportError: type[Exception] = _httpx.TransportError
"""Raised by the HTTP layer while a stream is read (the client wraps only the request)."""

BAD_BODY: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeDecodeError)
"""What the client raises reading a response body that is not JSON (or not UTF-8), whatever
its HTTP status: a broken or impostor server, not a bug of ours."""

BACKEND_EXCEPTIONS: tuple[type[Exception], ...] = (openai.APIError, TransportError, *BAD_BODY)

ENGINE_GONE: tuple[type[Exception], ...] = (openai.APIConnectionError, TransportError)
"""A replica that refused, reset or timed out the connection: another replica may take the request."""


def bad_body(backend: str, what: str, exc: BaseException | None = None) -> BackendError:
    """A response that is not what an OpenAI-compatible server sends: retryable (a restarting
    or overloaded server, a proxy's error page), never a silent empty result."""
    details: dict[str, Any] = {"backend": backend, "reason": "bad_body", "attempts": 1}
    if exc is not None:
        details["exception"] = type(exc).__name__
        what = f"{what} ({type(exc).__name__}: {str(exc)[:200]})"
    return BackendError(f"backend {backend} answered with {what}", retryable=True, details=details)


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def backend_error(exc: BaseException, backend: str, *, attempts: int | None = None) -> BackendError:
    """Rate limits, 5xx, timeouts, lost connections and unreadable bodies may pass on a retry;
    other 4xx will not."""
    if isinstance(exc, BAD_BODY):  # the client does not retry these: one attempt
        return bad_body(backend, "a body that is not valid JSON", exc)
    details: dict[str, Any] = {"backend": backend, "exception": type(exc).__name__}
    if attempts is not None:
        details["attempts"] = attempts
    if isinstance(exc, openai.APIStatusError):
        details["status_code"] = exc.status_code
        retryable = _retryable_status(exc.status_code)
        message = f"backend {backend} answered HTTP {exc.status_code}: {exc.message}"
    elif isinstance(exc, (openai.APIConnectionError, TransportError)):
        retryable = True
        message = f"backend {backend} unreachable: {type(exc).__name__}: {exc}"
    else:
        retryable = False
        message = f"backend {backend} failed: {type(exc).__name__}: {exc}"
    return BackendError(message, retryable=retryable, details=details)


def with_choices(response: Any, backend: str) -> Any:
    """``response`` if it has a list of choices (a completion or chat response); else the
    client parsed a body of another shape (text under another content type, other JSON)."""
    if not isinstance(getattr(response, "choices", None), list):
        raise bad_body(backend, f"a body without choices ({type(response).__name__})")
    return response
