"""A worker that runs tools by name for agent methods; ships a safe calculator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from .._compat import timeout as deadline
from ..proto.tasks import ToolCallTask, ToolDefinition
from ..runtime.worker import Worker, handles
from .errors import NotSupported
from .tools import CALCULATOR, Tool, ToolInputError, ToolResult


def parse_arguments(raw: str) -> dict[str, Any]:
    """OpenAI sends arguments as JSON text. Only an object names its arguments, so nothing
    else is guessed at; empty text means no arguments."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ToolInputError(f"arguments are not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise ToolInputError("arguments must be a JSON object")
    return value


class ToolsWorker(Worker):
    """Runs ``ToolCallTask`` against a registry of tools.

    Bad arguments and tool failures come back as ``is_error`` results with ``stderr`` (the agent
    can read them and try again); a tool name nobody registered is a typed ``NOT_SUPPORTED``
    failure, since no retry of the same call can succeed. Each call is bounded by
    ``call_timeout`` seconds.
    """

    def __init__(self, tools: Iterable[Tool] | None = None, *, call_timeout: float = 10.0) -> None:
        super().__init__()
        self.tools: dict[str, Tool] = {}
        self.call_timeout = call_timeout
        for tool in (CALCULATOR,) if tools is None else tools:
            self.add_tool(tool)

    def add_tool(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    def definitions(self) -> list[ToolDefinition]:
        """What to put in a ``ChatTask``'s ``tools`` so the model knows what it may call."""
        return [tool.definition for tool in self.tools.values()]

    async def call(self, name: str, arguments: str) -> ToolResult:
        tool = self.tools.get(name)
        if tool is None:
            raise NotSupported(
                f"unknown tool {name!r} (known: {sorted(self.tools)})",
                details={"tool_name": name, "known": sorted(self.tools)},
            )
        try:
            async with deadline(self.call_timeout):
                return await tool.run(parse_arguments(arguments))
        except ToolInputError as exc:
            return ToolResult.error(f"error: {exc}")
        except TimeoutError:
            return ToolResult.error(f"error: {name} timed out after {self.call_timeout}s", exit_code=124)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a tool's own bug is reported to the agent, not fatal
            return ToolResult.error(f"error: {name} failed: {type(exc).__name__}: {exc}")

    @handles(ToolCallTask)
    async def run_tool(self, task: ToolCallTask) -> None:
        started = time.perf_counter()
        out = await self.call(task.tool_name, task.arguments)
        task.result = out.result
        task.stdout = out.stdout
        task.stderr = out.stderr
        task.exit_code = out.exit_code
        task.is_error = out.is_error
        task.latency_s = time.perf_counter() - started
