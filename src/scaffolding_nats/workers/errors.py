"""Typed failures of workers, so callers can tell "retry elsewhere" from "your request is wrong"."""

from __future__ import annotations

from ..errors import ScaffoldingError
from ..proto.errors import ErrorCode


class BackendError(ScaffoldingError):
    """The model server behind a worker failed or is unreachable."""

    code = ErrorCode.BACKEND_ERROR


class NotSupported(ScaffoldingError):
    """A task asks for something this worker or its backend cannot do."""

    code = ErrorCode.NOT_SUPPORTED


class SandboxUnavailable(ScaffoldingError):
    """The code sandbox cannot run on this machine; raised at start-up so that a tools worker
    refuses to serve instead of running model-written code unsandboxed."""

    code = ErrorCode.NOT_SUPPORTED


class SandboxBusy(ScaffoldingError):
    """Every run slot of the python sandbox stayed taken for the whole queue wait (other
    programs were running); the same call may succeed later or on another replica."""

    code = ErrorCode.TIMEOUT
