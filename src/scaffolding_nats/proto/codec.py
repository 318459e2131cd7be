"""MessagePack encoding with typed errors for every way a message can be bad."""

from __future__ import annotations

from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from .errors import ErrorCode, ProtocolError
from .version import SUPPORTED_VERSIONS

M = TypeVar("M", bound=BaseModel)


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode(message: BaseModel) -> bytes:
    return pack(message.model_dump(mode="json", exclude_none=True))


def unpack_map(data: bytes, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Decode a MessagePack map and check its protocol version."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(
            f"payload of {len(data)} bytes is over the limit of {max_bytes}",
            code=ErrorCode.PAYLOAD_TOO_LARGE,
            details={"size": len(data), "limit": max_bytes},
        )
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"not valid MessagePack: {exc}", code=ErrorCode.MALFORMED) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a MessagePack map, got {type(obj).__name__}", code=ErrorCode.MALFORMED)
    version = obj.get("v")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {version!r} is not supported (supported: {sorted(SUPPORTED_VERSIONS)})",
            code=ErrorCode.UNSUPPORTED_VERSION,
            details={"version": version, "supported": sorted(SUPPORTED_VERSIONS)},
        )
    return obj


def peek_id(data: bytes, *path: str) -> str | None:
    """Best effort, for error replies: the id inside a message that failed to decode or
    validate (any version), so the error can still reach whoever sent it."""
    try:
        obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=False)
        for key in path:
            obj = obj.get(key) if isinstance(obj, dict) else None
    except Exception:
        return None
    if isinstance(obj, str) and 0 < len(obj) <= 128 and obj.replace("-", "").replace("_", "").isalnum():
        return obj
    return None


def validate(model: type[M], obj: dict[str, Any]) -> M:
    """Validate a decoded map; field errors become one ``invalid`` error naming each path."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> ProtocolError:
    problems = [{"path": ".".join(str(p) for p in err["loc"]), "error": err["msg"]} for err in exc.errors()]
    summary = "; ".join(f"{p['path'] or '<root>'}: {p['error']}" for p in problems[:5])
    return ProtocolError(f"invalid message: {summary}", code=ErrorCode.INVALID, details={"errors": problems})


def decode(model: type[M], data: bytes, *, max_bytes: int | None = None) -> M:
    return validate(model, unpack_map(data, max_bytes=max_bytes))


def task_from_request(request: Any) -> Any:
    """Build the task object a ``TaskRequest`` carries, by its ``kind``."""
    from .tasks import TASK_TYPES

    cls = TASK_TYPES.get(request.kind)
    if cls is None:
        raise ProtocolError(
            f"unknown task type {request.kind!r} (known: {sorted(TASK_TYPES)})",
            code=ErrorCode.UNKNOWN_TASK_TYPE,
            details={"kind": request.kind, "known": sorted(TASK_TYPES)},
        )
    return validate(cls, request.task)
