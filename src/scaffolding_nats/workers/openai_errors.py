"""Exceptions of the ``openai`` client → typed ``BackendError``."""

from __future__ import annotations

from typing import Any

import openai

from .errors import BackendError

try:  # openai >= 3 ships on httpx2; older releases on httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

TransportError: type[Exception] = _httpx.TransportError
"""Raised by the HTTP layer while a stream is read (the client wraps only the request)."""

BACKEND_EXCEPTIONS: tuple[type[Exception], ...] = (openai.APIError, TransportError)


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def backend_error(exc: BaseException, backend: str, *, attempts: int | None = None) -> BackendError:
    """Rate limits, 5xx, timeouts and lost connections may pass on a retry; other 4xx will not."""
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
