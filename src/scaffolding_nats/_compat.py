"""Python 3.10 support: TaskGroup, timeout and ExceptionGroup arrived in 3.11."""

import sys

if sys.version_info >= (3, 11):
    import builtins
    from asyncio import TaskGroup, timeout

    BaseExceptionGroup = builtins.BaseExceptionGroup
else:  # pragma: no cover - exercised only on 3.10
    from async_timeout import timeout
    from exceptiongroup import BaseExceptionGroup
    from taskgroup import TaskGroup

__all__ = ["BaseExceptionGroup", "TaskGroup", "timeout"]
