"""Every task frame, built and read in one place: the request a controller queues, and the
frames a worker sends back (``heartbeat``, which also says "started", ``partial``, ``final``,
and the error reply to a task it cannot take).

Frames are built as plain maps on the hot path (their shapes are ``TaskRequest`` and
``TaskReply``, whose schemas clients in other languages read). Frames read from the bus are
untrusted: a frame of the common shape is checked by hand, field by field as the models would;
anything else goes through the models, so a bad frame gets the same typed error either way.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .errors import ErrorInfo, TaskStatus, http_status_for, task_status_for
from .messages import FrameType, TaskReply, TaskRequest
from .subjects import HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE
from .tasks import Task
from .version import PROTOCOL_VERSION

_FRAMES = {f.value: f for f in FrameType}
_STATUSES = {s.value: s for s in TaskStatus}
_REQUEST_KEYS = frozenset(TaskRequest.model_fields)
_REPLY_KEYS = frozenset(TaskReply.model_fields)


# -- the request ------------------------------------------------------------------------------


def request(kind: str, inputs: dict[str, Any], *, timeout_ms: int, heartbeat_ms: int) -> bytes:
    """A task request (shape ``TaskRequest``)."""
    return codec.pack(
        {"v": PROTOCOL_VERSION, "kind": kind, "task": inputs, "timeout_ms": timeout_ms, "heartbeat_ms": heartbeat_ms}
    )


def _plain_request(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` is a valid ``TaskRequest`` (strict), checked without building the model."""
    if not obj.keys() <= _REQUEST_KEYS or type(obj.get("kind")) is not str or type(obj.get("task")) is not dict:
        return False
    t, h = obj.get("timeout_ms"), obj.get("heartbeat_ms")
    return (t is None or (type(t) is int and t >= 1)) and (h is None or (type(h) is int and h >= 50))


class Request:
    """A task request as read: what the serving side acts on (a valid ``TaskRequest``)."""

    __slots__ = ("heartbeat_ms", "kind", "task", "timeout_ms")

    def __init__(self, kind: str, task: dict[str, Any], timeout_ms: int | None, heartbeat_ms: int | None) -> None:
        self.kind, self.task, self.timeout_ms, self.heartbeat_ms = kind, task, timeout_ms, heartbeat_ms


def read_request(data: bytes, *, max_bytes: int | None = None) -> tuple[Request, Task]:
    """The request and the task it carries; ``ProtocolError`` (typed) for anything off-contract."""
    obj = codec.unpack_map(data, max_bytes=max_bytes)
    if _plain_request(obj):  # the common shape, checked by hand exactly as validation would
        req = Request(obj["kind"], obj["task"], obj.get("timeout_ms"), obj.get("heartbeat_ms"))
    else:
        r = codec.validate(TaskRequest, obj)
        req = Request(r.kind, r.task, r.timeout_ms, r.heartbeat_ms)
    task: Task = codec.task_from_request(req)  # the task's own fields: always validated
    return req, task


# -- replies ----------------------------------------------------------------------------------


def reply(
    task_id: str,
    frame: FrameType,
    seq: int,
    attempt: int | None,
    *,
    status: TaskStatus | None = None,
    result: dict[str, Any] | None = None,
    error: ErrorInfo | None = None,
) -> bytes:
    """One frame of a task's reply (shape ``TaskReply``)."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "task_id": task_id, "frame": frame.value, "seq": seq}
    if attempt is not None:
        body["attempt"] = attempt
    if status is not None:
        body["status"] = status.value
    if result:
        body["result"] = result
    if error is not None:
        body["error"] = error.model_dump(mode="json")
    return codec.pack(body)


def final_within(
    task_id: str,
    seq: int,
    attempt: int | None,
    max_payload: int,
    *,
    status: TaskStatus,
    result: dict[str, Any] | None,
    error: ErrorInfo | None,
) -> tuple[bytes, ErrorInfo | None]:
    """A final frame that fits the bus: one too large becomes a ``payload_too_large`` final
    (the task fails, typed), whose error is returned too."""
    data = reply(task_id, FrameType.FINAL, seq, attempt, status=status, result=result, error=error)
    too_large = codec.oversize(data, max_payload, "the task's result")
    if too_large is None:
        return data, None
    too_large.details["task_id"] = task_id
    status = task_status_for(too_large.code)
    return reply(task_id, FrameType.FINAL, seq, attempt, status=status, error=too_large), too_large


def error_reply(task_id: str, error: ErrorInfo, attempt: int | None) -> tuple[bytes, dict[str, str]]:
    """The final frame refusing or failing a task, with the micro service error headers."""
    body = codec.encode(TaskReply(task_id=task_id, status=task_status_for(error.code), error=error, attempt=attempt))
    headers = {
        HEADER_SERVICE_ERROR: error.message[:200],
        HEADER_SERVICE_ERROR_CODE: str(http_status_for(error.code)),
    }
    return body, headers


class Frame:
    """A reply frame as read: what the caller acts on."""

    __slots__ = ("attempt", "error", "frame", "result", "status")

    def __init__(
        self,
        frame: FrameType,
        attempt: int | None,
        status: TaskStatus | None = None,
        result: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        self.frame, self.attempt, self.status, self.error = frame, attempt, status, error
        self.result: dict[str, Any] = result if result is not None else {}


def _attempt_ok(attempt: Any) -> bool:
    return attempt is None or (type(attempt) is int and attempt >= 1)


def read_reply(data: bytes) -> Frame:
    """Read one reply frame; ``ProtocolError`` (typed) for anything off-contract."""
    obj = codec.unpack_map(data)
    kind = obj.get("frame", "final")
    frame = _FRAMES.get(kind) if type(kind) is str else None
    status, result, attempt = obj.get("status"), obj.get("result", {}), obj.get("attempt")
    if (
        frame is not None
        and obj.get("error") is None
        and obj.keys() <= _REPLY_KEYS
        and type(obj.get("task_id")) is str
        and type(obj.get("seq", 0)) is int
        and (status is None or (type(status) is str and status in _STATUSES))
        and type(result) is dict
        and _attempt_ok(attempt)
    ):
        return Frame(frame, attempt, _STATUSES[status] if status is not None else None, result)
    r = codec.validate(TaskReply, obj)
    return Frame(r.frame, r.attempt, r.status, r.result, r.error)


__all__ = [
    "Frame",
    "Request",
    "error_reply",
    "final_within",
    "read_reply",
    "read_request",
    "reply",
    "request",
]
