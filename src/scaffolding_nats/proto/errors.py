"""Error codes, the error object carried by task replies and job events, the one
exception hierarchy (each exception carries its wire ``ErrorCode``), and ``ERRORS``: the one
table from which every code's exception class, task status, HTTP status and retry policy derive."""

from __future__ import annotations

from dataclasses import dataclass
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


class TaskStatus(str, Enum):
    """How a task ended (``pending`` until it has). Defined here so that the error table can
    name the status each code gives a task; ``proto.tasks`` re-exports it."""

    PENDING = "pending"
    SUCCESS = "success"
    NOT_SUPPORTED = "not_supported"
    WORKER_ERROR = "worker_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class ErrorInfo(BaseModel):
    """A typed error: what went wrong, whether trying again may help, and data to act on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    code: ErrorCode = Field(strict=False)
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class ScaffoldingError(Exception):
    """Base class: carries the code, a message, whether a retry may help, and details."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retryable = ERRORS[self.code].retryable if retryable is None else retryable
        self.details = details or {}

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, retryable=self.retryable, details=self.details)

    @classmethod
    def from_info(cls, info: ErrorInfo) -> ScaffoldingError:
        return ERRORS[info.code].exception(info.message, code=info.code, retryable=info.retryable, details=info.details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r})"


class ProtocolError(ScaffoldingError):
    """A message that breaks the contract: malformed, wrong version, wrong fields, too big."""

    code = ErrorCode.INVALID


class TaskFailed(ScaffoldingError):
    """A task ended without success; raised when a controller needs its result."""

    code = ErrorCode.WORKER_ERROR


class NoWorkerError(ScaffoldingError):
    code = ErrorCode.NO_WORKER


class DeadlineExceeded(ScaffoldingError):
    code = ErrorCode.TIMEOUT


class Cancelled(ScaffoldingError):
    code = ErrorCode.CANCELLED


class BudgetExhausted(ScaffoldingError):
    code = ErrorCode.BUDGET_EXHAUSTED


class UnknownMethod(ScaffoldingError):
    code = ErrorCode.UNKNOWN_METHOD


class ControllerError(ScaffoldingError):
    code = ErrorCode.CONTROLLER_ERROR


class NoController(ScaffoldingError):
    """No controller service answers on this deployment."""

    code = ErrorCode.NO_CONTROLLER


@dataclass(frozen=True)
class ErrorSpec:
    """Everything the code decides, in one row.

    ``retryable``: the same request may succeed later (told to clients). ``resend``: a final
    frame with this code says the task went back to its queue (a replica shutting down), so the
    transport waits for another replica to take it, within the task's deadline (``resends``)."""

    exception: type[ScaffoldingError]
    task_status: TaskStatus
    http_status: int
    retryable: bool = False
    resend: bool = False


_S = TaskStatus
ERRORS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.MALFORMED: ErrorSpec(ProtocolError, _S.REJECTED, 400),
    ErrorCode.UNSUPPORTED_VERSION: ErrorSpec(ProtocolError, _S.REJECTED, 400),
    ErrorCode.INVALID: ErrorSpec(ProtocolError, _S.REJECTED, 400),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(ProtocolError, _S.REJECTED, 413),
    ErrorCode.UNKNOWN_TASK_TYPE: ErrorSpec(ProtocolError, _S.REJECTED, 400),
    ErrorCode.NOT_SUPPORTED: ErrorSpec(TaskFailed, _S.NOT_SUPPORTED, 501),
    ErrorCode.NO_WORKER: ErrorSpec(NoWorkerError, _S.REJECTED, 503, retryable=True),
    ErrorCode.AT_CAPACITY: ErrorSpec(NoWorkerError, _S.REJECTED, 503, retryable=True, resend=True),
    ErrorCode.WORKER_ERROR: ErrorSpec(TaskFailed, _S.WORKER_ERROR, 502),
    ErrorCode.BACKEND_ERROR: ErrorSpec(TaskFailed, _S.WORKER_ERROR, 502, retryable=True),
    ErrorCode.TIMEOUT: ErrorSpec(DeadlineExceeded, _S.TIMEOUT, 504, retryable=True),
    ErrorCode.CANCELLED: ErrorSpec(Cancelled, _S.CANCELLED, 499),
    ErrorCode.UNKNOWN_METHOD: ErrorSpec(UnknownMethod, _S.REJECTED, 404),
    ErrorCode.CONTROLLER_ERROR: ErrorSpec(ControllerError, _S.WORKER_ERROR, 500),
    ErrorCode.BUDGET_EXHAUSTED: ErrorSpec(BudgetExhausted, _S.REJECTED, 422),
    ErrorCode.NO_CONTROLLER: ErrorSpec(NoController, _S.REJECTED, 503),
    ErrorCode.INTERNAL: ErrorSpec(ScaffoldingError, _S.WORKER_ERROR, 500),
}
"""Every code's row; a test checks that no code is missing."""

RETRYABLE_CODES = frozenset(code for code, spec in ERRORS.items() if spec.retryable)
RESEND_CODES = frozenset(code for code, spec in ERRORS.items() if spec.resend)


def resends(error: ErrorInfo | None) -> bool:
    """Whether a final frame carrying ``error`` hands the task back to its queue (the table's
    ``resend`` column; like nats.py's ``js/errors.py`` ``from_error``, one place decides)."""
    return error is not None and ERRORS[error.code].resend


def task_status_for(code: ErrorCode) -> TaskStatus:
    return ERRORS[code].task_status


def http_status_for(code: ErrorCode) -> int:
    return ERRORS[code].http_status
