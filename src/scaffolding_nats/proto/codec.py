"""MessagePack encoding with typed errors for every way a message can be bad."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from .errors import ErrorCode, ErrorInfo, ProtocolError
from .version import SUPPORTED_VERSIONS

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 64
"""How deeply maps and arrays may nest in a message (parameters, tool schemas, metadata)."""

_SCALARS = (str, int, float, bool, type(None))


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode(message: BaseModel) -> bytes:
    """MessagePack of a model; a value the wire cannot carry (an integer beyond 64 bits, nesting
    too deep to serialise) is an ``invalid`` error, not a crash."""
    try:
        return pack(message.model_dump(mode="json", exclude_none=True))
    except (OverflowError, TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(
            f"{type(message).__name__} cannot be encoded: {type(exc).__name__}: {exc}"[:500],
            code=ErrorCode.INVALID,
            details={"message_type": type(message).__name__},
        ) from None


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _plain(node: Any, depth: int, max_depth: int) -> bool:
    """The fast path (every message, so no paths are built): True when ``node`` is plain."""
    if depth > max_depth:
        return False
    kind = type(node)
    if kind is dict:
        for key, value in node.items():
            if type(key) is not str or (type(value) not in _PLAIN and not _plain(value, depth + 1, max_depth)):
                return False
        return True
    if kind is list:
        return all(type(v) in _PLAIN or _plain(v, depth + 1, max_depth) for v in node)
    return kind in _PLAIN


def check_plain(obj: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Only what JSON can say crosses the bus: maps with string keys, arrays, text (``str``,
    never ``bin``), numbers, booleans and nil, nested at most ``max_depth`` deep. MessagePack
    extension types (e.g. Timestamp) and binary are ``invalid``."""
    if _plain(obj, 0, max_depth):
        return
    _explain(obj, max_depth)


def _explain(obj: Any, max_depth: int) -> None:
    """The slow path: find the first offending value and raise naming its path."""
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise ProtocolError(
                f"{path or '<root>'}: nested deeper than {max_depth} levels",
                code=ErrorCode.INVALID,
                details={"path": path, "max_depth": max_depth},
            )
        if isinstance(node, dict):
            for key, value in node.items():
                if type(key) is not str:
                    raise _not_plain(f"{path}[{key!r}]", key, "map key")
                if not isinstance(value, _SCALARS):
                    stack.append((value, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if not isinstance(value, _SCALARS):
                    stack.append((value, depth + 1, f"{path}[{i}]"))
        elif not isinstance(node, _SCALARS):
            raise _not_plain(path, node, "value")


def _not_plain(path: str, value: Any, what: str) -> ProtocolError:
    kind = "bin" if isinstance(value, bytes | bytearray) else type(value).__name__
    return ProtocolError(
        f"{path or '<root>'}: a MessagePack {kind} {what} is not allowed (text is str, never bin; no extension types)",
        code=ErrorCode.INVALID,
        details={"errors": [{"path": path, "error": f"{kind} is not allowed"}]},
    )


def oversize(data: bytes, limit: int | None, what: str) -> ErrorInfo | None:
    """The one size check: a typed ``payload_too_large`` error when ``data`` (``what``: "task",
    "job", ...) is over the server's ``max_payload`` (``limit``; 0 or None: no limit known)."""
    if not limit or len(data) <= limit:
        return None
    return ErrorInfo(
        code=ErrorCode.PAYLOAD_TOO_LARGE,
        message=f"{what} of {len(data)} bytes exceeds the server's max_payload of {limit}",
        details={"size": len(data), "limit": limit},
    )


def check_size(data: bytes, limit: int | None, what: str) -> bytes:
    """``data``, or a ``ProtocolError`` when the bus cannot carry it (see ``oversize``)."""
    error = oversize(data, limit, what)
    if error is not None:
        raise ProtocolError(error.message, code=error.code, details=error.details)
    return data


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
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {version!r} is not supported (supported: {sorted(SUPPORTED_VERSIONS)})",
            code=ErrorCode.UNSUPPORTED_VERSION,
            details={
                "version": version if isinstance(version, int | float | str | None) else repr(version)[:64],
                "supported": sorted(SUPPORTED_VERSIONS),
            },
        )
    check_plain(obj)
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
    return obj if is_id(obj) else None


_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


def is_id(value: Any) -> bool:
    """A job or task id: usable as one subject token (no dots, wildcards or spaces)."""
    return isinstance(value, str) and _ID.match(value) is not None


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
