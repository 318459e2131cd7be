"""One import point for asyncio's TaskGroup and timeout and the builtin BaseExceptionGroup
(the project requires Python >= 3.11, where all three exist)."""

import builtins
from asyncio import TaskGroup, timeout

BaseExceptionGroup = builtins.BaseExceptionGroup

__all__ = ["BaseExceptionGroup", "TaskGroup", "timeout"]
