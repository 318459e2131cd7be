"""The package's exceptions: one base class, ``ScaffoldingError``, whose subclasses carry a
wire ``ErrorCode``. Defined beside the codes in ``proto.errors``; this is their public home."""

from .proto.errors import (
    BudgetExhausted,
    Cancelled,
    ControllerError,
    DeadlineExceeded,
    NoController,
    NoWorkerError,
    ProtocolError,
    ScaffoldingError,
    TaskFailed,
    UnknownMethod,
)

__all__ = [
    "BudgetExhausted",
    "Cancelled",
    "ControllerError",
    "DeadlineExceeded",
    "NoController",
    "NoWorkerError",
    "ProtocolError",
    "ScaffoldingError",
    "TaskFailed",
    "UnknownMethod",
]
