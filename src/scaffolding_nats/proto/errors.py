"""Error codes and the error object carried by task replies and job events."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorCode(str, Enum):
    """Every error that can cross the bus. Stable strings: clients switch on them."""

    MALFORMED = "malformed"  # not MessagePack, or not a map
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID = "invalid"  # decodes, but fields are missing or of the wrong type
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_TASK_TYPE = "unknown_task_type"
    NOT_SUPPORTED = "not_supported"  # the worker has no handler for this task type
    NO_WORKER = "no_worker"  # nobody serves the task's worker tag
    AT_CAPACITY = "at_capacity"  # a worker replica is full; retry elsewhere
    WORKER_ERROR = "worker_error"
    BACKEND_ERROR = "backend_error"  # the model server behind a worker failed
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    UNKNOWN_METHOD = "unknown_method"
    CONTROLLER_ERROR = "controller_error"  # the method's controller raised
    BUDGET_EXHAUSTED = "budget_exhausted"
    NO_CONTROLLER = "no_controller"
    INTERNAL = "internal"


RETRYABLE_CODES = frozenset(
    {ErrorCode.NO_WORKER, ErrorCode.AT_CAPACITY, ErrorCode.TIMEOUT, ErrorCode.BACKEND_ERROR}
)


class ErrorInfo(BaseModel):
    """A typed error: what went wrong, whether trying again may help, and data to act on."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)
