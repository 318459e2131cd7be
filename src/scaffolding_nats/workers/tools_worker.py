"""A worker that runs tools by name for agent methods: a safe calculator, a ``python`` tool
that runs code in a bubblewrap sandbox, and the tools of configured MCP servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._compat import timeout as deadline
from ..proto.tasks import JOB_ID_KEY, LIST_TOOLS, ToolCallTask, ToolDefinition
from ..runtime.worker import Worker, handles
from .errors import NotSupported
from .tools import CALCULATOR, Tool, ToolFunction, ToolInputError, ToolResult
from .tools.python_tool import python_tool
from .tools.sandbox import Sandbox

if TYPE_CHECKING:
    from .tools.mcp_bridge import McpBridge

MCP_CONFIG_ENV = "SCAF_MCP_CONFIG"


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
    ``call_timeout`` seconds from its start: a tool with limited room (the python sandbox's run
    slots) first waits for room, fairly between jobs (the task's ``metadata["job_id"]``) and
    within its own bound (``SandboxBusy``, a typed ``timeout`` failure).
    """

    def __init__(
        self,
        tools: Iterable[Tool] | None = None,
        *,
        call_timeout: float = 30.0,
        python: bool = True,
        sandbox: Sandbox | dict[str, Any] | None = None,
        mcp_config: str | dict[str, Any] | None = None,
    ) -> None:
        """``tools``: the built-in tools (default: the calculator); ``python``: also offer the
        sandboxed ``python`` tool (``sandbox``: a ``Sandbox`` or its limits and options);
        ``mcp_config``: a YAML/JSON file or dict of MCP servers (default: ``$SCAF_MCP_CONFIG``)."""
        super().__init__()
        self.tools: dict[str, Tool] = {}
        self.call_timeout = call_timeout
        for tool in (CALCULATOR,) if tools is None else tools:
            self.add_tool(tool)
        self.sandbox: Sandbox | None = None
        if python:
            self.sandbox = sandbox if isinstance(sandbox, Sandbox) else Sandbox.from_config(sandbox or {})
            self.add_tool(python_tool(self.sandbox))
        self.mcp: McpBridge | None = None
        self._mcp_source = mcp_config if mcp_config is not None else os.environ.get(MCP_CONFIG_ENV) or None

    async def start(self) -> None:
        """Refuse to serve without a working sandbox; connect the MCP servers."""
        if self.sandbox is not None:
            await self.sandbox.check()
        source = self._mcp_source
        if source is not None:
            from .tools.mcp_bridge import McpBridge, load_config

            config = await asyncio.to_thread(load_config, source if isinstance(source, dict) else Path(source))
            self.mcp = McpBridge(config)
            await self.mcp.start()
            try:
                for tool in self.mcp.tools():
                    if tool.name in self.tools:
                        raise ValueError(f"MCP tool {tool.name!r} clashes with a tool of that name; set a prefix")
                    self.add_tool(tool)
            except BaseException:
                await self.mcp.stop()
                raise

    async def stop(self) -> None:
        if self.mcp is not None:
            await self.mcp.stop()
        if self.sandbox is not None:
            await self.sandbox.close()

    def add_tool(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    def definitions(self) -> list[ToolDefinition]:
        """What to put in a ``ChatTask``'s ``tools`` so the model knows what it may call."""
        return [tool.definition for tool in self.tools.values()]

    async def call(self, name: str, arguments: str, *, job: Hashable = None) -> ToolResult:
        """Run one call of ``job`` (an id, or None: calls without one share a lane)."""
        if name == LIST_TOOLS:
            listed = json.dumps([d.model_dump() for d in self.definitions()])
            return ToolResult(result=listed, stdout=listed)
        tool = self.tools.get(name)
        if tool is None:
            raise NotSupported(
                f"unknown tool {name!r} (known: {sorted(self.tools)})",
                details={"tool_name": name, "known": sorted(self.tools)},
            )
        try:
            parsed = parse_arguments(arguments)
        except ToolInputError as exc:
            return ToolResult.error(f"error: {exc}")
        room = tool.admit(job) if tool.admit is not None else contextlib.nullcontext(tool.run)
        async with room as run:  # a typed error (SandboxBusy) when no room comes in time
            return await self._bounded(name, run, parsed)

    async def _bounded(self, name: str, run: ToolFunction, arguments: dict[str, Any]) -> ToolResult:
        try:
            async with deadline(self.call_timeout):
                return await run(arguments)
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
        out = await self.call(task.tool_name, task.arguments, job=job_of(task))
        task.result = out.result
        task.stdout = out.stdout
        task.stderr = out.stderr
        task.exit_code = out.exit_code
        task.is_error = out.is_error
        task.latency_s = time.perf_counter() - started


def job_of(task: ToolCallTask) -> str | None:
    """The job a call belongs to: ``metadata["job_id"]``, which the controller's transport
    sets on every task of a job (``RemoteWorker``); None for calls sent without one."""
    job = task.metadata.get(JOB_ID_KEY)
    return job if isinstance(job, str) else None
