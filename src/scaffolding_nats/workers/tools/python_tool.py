"""The ``python`` tool: runs a model-written program in the bubblewrap sandbox.

Interface (relied on by program-aided methods): tool name ``python``, arguments
``{"code": "<python source>", "stdin": "<optional text>"}``; the result text is the program's
stdout (trimmed), with stdout, stderr and the exit code alongside. A non-zero exit or a limit
that ended the run makes an ``is_error`` result that says which limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from ...proto.tasks import ToolDefinition
from .base import Tool, ToolFunction, ToolInputError, ToolResult
from .sandbox import Sandbox

NAME = "python"

DEFINITION = ToolDefinition(
    name=NAME,
    description=(
        "Run a Python 3 program (standard library only, no network, no files outside /tmp, "
        "a few seconds of CPU) and return what it prints. Print the values you need, "
        "e.g. print(17 * 23)."
    ),
    parameters={
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "the whole program; its stdout is the result"},
            "stdin": {"type": "string", "description": "optional text on the program's standard input"},
        },
        "required": ["code"],
    },
)


def python_tool(sandbox: Sandbox) -> Tool:
    """A ``python`` tool bound to ``sandbox`` (whose ``check()`` the worker runs at start-up).
    Its admission holds one of the sandbox's run slots, shared fairly between jobs."""

    async def run_in(arguments: dict[str, Any], slot: int | None) -> ToolResult:
        code = arguments.get("code")
        stdin = arguments.get("stdin", "")
        if not isinstance(code, str) or not code.strip():
            raise ToolInputError('expected arguments {"code": "<python source>"}')
        if not isinstance(stdin, str):
            raise ToolInputError('"stdin" must be a string')
        try:
            out = await sandbox.run(code, stdin, slot=slot)
        except ValueError as exc:
            raise ToolInputError(str(exc)) from None
        stderr = out.stderr
        if out.limit is not None:
            stderr = f"{stderr.rstrip()}\nsandbox: stopped, limit exceeded: {out.limit}".lstrip()
        return ToolResult(
            result=out.stdout.strip(),
            stdout=out.stdout,
            stderr=stderr,
            exit_code=out.exit_code if out.exit_code != 0 or out.limit is None else 137,
            is_error=not out.ok,
        )

    async def run(arguments: dict[str, Any]) -> ToolResult:
        return await run_in(arguments, None)

    @asynccontextmanager
    async def admit(job: Hashable) -> AsyncIterator[ToolFunction]:
        async with sandbox.slot(job) as slot:

            async def in_slot(arguments: dict[str, Any]) -> ToolResult:
                return await run_in(arguments, slot)

            yield in_slot

    return Tool(definition=DEFINITION, run=run, admit=admit)
