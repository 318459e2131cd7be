"""OpenAI-style error responses, and how each bus error maps to an HTTP status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import ScaffoldingError
from ...proto.errors import ErrorCode, ErrorInfo, http_status_for

log = logging.getLogger(__name__)

_TYPE = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(
    message: str, *, code: str, status: int, param: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": message,
        "type": _TYPE.get(status, "server_error"),
        "param": param,
        "code": code,
    }
    if details:
        body["details"] = details
    return {"error": body}


def error_response(
    message: str, *, code: str, status: int, param: str | None = None, details: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, code=code, status=status, param=param, details=details), status_code=status)


def from_info(info: ErrorInfo) -> JSONResponse:
    status = http_status_for(info.code)
    code = "model_not_found" if info.code is ErrorCode.UNKNOWN_METHOD else info.code.value
    return error_response(info.message, code=code, status=status, details=info.details or None)


async def on_scaffolding_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ScaffoldingError)
    return from_info(exc.to_info())


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    summary = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or '<body>'}: {e.get('msg')}" for e in errors[:5]
    )
    return error_response(
        f"invalid request: {summary}", code="invalid_request", status=400, param=".".join(loc) or None
    )


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(str(exc.detail), code="http_error", status=exc.status_code)


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A defect still answers in OpenAI's shape (and is logged); a bad request never gets here."""
    if isinstance(exc, RecursionError):  # input nested too deep for a parser or serialiser
        return error_response("request nested too deeply", code="invalid_request", status=400)
    log.exception("unexpected error serving %s", request.url.path)
    return error_response(f"internal error: {type(exc).__name__}", code="internal", status=500)
