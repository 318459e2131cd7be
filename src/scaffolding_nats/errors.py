"""The one exception hierarchy of the package. Every error carries a wire ``ErrorCode``."""

from __future__ import annotations

from typing import Any

from .proto.errors import RETRYABLE_CODES, ErrorCode, ErrorInfo


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
        return ErrorInfo(
            code=self.code, message=self.message, retryable=self.retryable, details=self.details
        )

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
