"""Error codes, the error object carried by task replies and job events, and the one
exception hierarchy (each exception carries its wire ``ErrorCode``)."""

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


RETRYABLE_CODES = frozenset({ErrorCode.NO_WORKER, ErrorCode.AT_CAPACITY, ErrorCode.TIMEOUT, ErrorCode.BACKEND_ERROR})


class ErrorInfo(BaseModel):
    """A typed error: what went wrong, whether trying again may help, and data to act on."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
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
        self.retryable = self.code in RETRYABLE_CODES if retryable is None else retryable
        self.details = details or {}

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, retryable=self.retryable, details=self.details)

    @classmethod
    def from_info(cls, info: ErrorInfo) -> ScaffoldingError:
        exc_cls = _BY_CODE.get(info.code, ScaffoldingError)
        return exc_cls(info.message, code=info.code, retryable=info.retryable, details=info.details)

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


_BY_CODE: dict[ErrorCode, type[ScaffoldingError]] = {
    ErrorCode.MALFORMED: ProtocolError,
    ErrorCode.UNSUPPORTED_VERSION: ProtocolError,
    ErrorCode.INVALID: ProtocolError,
    ErrorCode.PAYLOAD_TOO_LARGE: ProtocolError,
    ErrorCode.UNKNOWN_TASK_TYPE: ProtocolError,
    ErrorCode.NO_WORKER: NoWorkerError,
    ErrorCode.TIMEOUT: DeadlineExceeded,
    ErrorCode.CANCELLED: Cancelled,
    ErrorCode.BUDGET_EXHAUSTED: BudgetExhausted,
    ErrorCode.UNKNOWN_METHOD: UnknownMethod,
    ErrorCode.CONTROLLER_ERROR: ControllerError,
}
