"""What a tool is to the tools worker: a definition the model sees and a coroutine that runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from ...proto.tasks import ToolDefinition


@dataclass(frozen=True)
class ToolResult:
    """What a tool call produced. ``is_error`` results are answers too: the agent reads the
    message and can correct its call, so bad input is not a task failure."""

    result: str
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    is_error: bool = False

    @classmethod
    def error(cls, message: str, *, exit_code: int = 1) -> ToolResult:
        return cls(result=message, stderr=message, exit_code=exit_code, is_error=True)


class ToolInputError(ValueError):
    """The arguments are unusable; reported to the model as an error result."""


ToolFunction = Callable[[dict[str, Any]], Awaitable[ToolResult]]

Admission = Callable[[Hashable], AbstractAsyncContextManager[ToolFunction]]
"""Waits for room to run one call of a job (the job's id, or None), then yields the function
that runs it in that room; raises a typed error when no room comes in time."""


@dataclass(frozen=True)
class Tool:
    """``admit``: for a tool with limited room (the sandbox's run slots), so that the call's
    timeout starts when the call does, not while it waits."""

    definition: ToolDefinition
    run: ToolFunction
    admit: Admission | None = None

    @property
    def name(self) -> str:
        return self.definition.name
