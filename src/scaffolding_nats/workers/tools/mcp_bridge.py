"""MCP servers as tools of the tools worker: each configured server (stdio command or
streamable-HTTP URL) is connected at start-up, its tools are listed and registered like any
other tool, and a ``ToolCallTask`` naming one becomes an MCP ``tools/call``.

Configuration is a YAML or JSON file (``--worker-args '{"mcp_config": "mcp.yaml"}'`` or
``SCAF_MCP_CONFIG``), in the common ``mcpServers`` shape::

    servers:            # or mcpServers
      files:
        command: python
        args: ["-m", "my_server"]
        env: {LOG_LEVEL: info}    # the server gets only these and a minimal default environment
        prefix: "files_"          # optional: registered names become files_<tool>
        tools: [read, list]       # optional allow-list
        timeout: 30               # seconds per call and for connecting
      search:
        url: http://search:8000/mcp
        headers: {Authorization: "Bearer ..."}

The mcp SDK is imported only when a server is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..._compat import timeout as deadline
from ...proto.tasks import ToolDefinition
from ..errors import BackendError
from .base import Tool, ToolResult

log = logging.getLogger(__name__)


class McpServerConfig(BaseModel):
    """One MCP server: exactly one of ``command`` (stdio) and ``url`` (streamable HTTP)."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    prefix: str = ""
    tools: list[str] | None = None
    timeout: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        return self


class McpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    servers: dict[str, McpServerConfig] = Field(default_factory=dict, alias="mcpServers")


def load_config(source: str | Path | dict[str, Any]) -> McpConfig:
    """A config from a dict or a YAML/JSON file; ``ValueError`` naming the problem otherwise."""
    if isinstance(source, dict):
        data: Any = source
    else:
        text = Path(source).read_text()
        data = json.loads(text) if str(source).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"MCP config {source!r}: expected a mapping with 'servers'")
    if "servers" in data and "mcpServers" not in data:
        data = {"mcpServers": data["servers"], **{k: v for k, v in data.items() if k != "servers"}}
    try:
        return McpConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"MCP config: {exc}") from None


class McpServerLink:
    """One connected server. The SDK's client lives in a task of its own (its anyio scopes must
    open and close in one task); calls from handler tasks go through its session."""

    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self.client: Any = None
        self.tools: list[Any] = []
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def _target(self) -> Any:
        if self.config.command is not None:
            from mcp import StdioServerParameters

            return StdioServerParameters(
                command=self.config.command, args=self.config.args, env=self.config.env, cwd=self.config.cwd
            )
        assert self.config.url is not None
        if not self.config.headers:
            return self.config.url
        return self._http_with_headers(self.config.url)

    @contextlib.asynccontextmanager
    async def _http_with_headers(self, url: str) -> AsyncIterator[Any]:
        """Streamable HTTP with the configured headers; the SDK leaves closing a client it was
        given to the caller."""
        import httpx2  # type: ignore[import-not-found,unused-ignore]
        from mcp.client.streamable_http import streamable_http_client

        async with (
            # as the SDK's own client: a long read timeout for the server's event stream; calls
            # have their own deadline (read_timeout_seconds)
            httpx2.AsyncClient(headers=self.config.headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            streamable_http_client(url, http_client=http) as streams,
        ):
            yield streams

    async def _hold(self) -> None:
        from mcp import Client

        try:
            async with Client(self._target(), read_timeout_seconds=self.config.timeout) as client:
                tools: list[Any] = []
                cursor: str | None = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.client, self.tools = client, tools
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:  # reported by connect() or, later, by calls
            self._error = exc
        finally:
            self.client = None
            self._ready.set()

    async def connect(self) -> None:
        """Start the server (or open the HTTP session) and list its tools, within ``timeout``."""
        self._task = asyncio.create_task(self._hold(), name=f"mcp-{self.name}")
        try:
            async with deadline(self.config.timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.close()
            raise BackendError(f"MCP server {self.name!r}: no tool list within {self.config.timeout}s") from None
        if self.client is None:
            await self.close()
            raise BackendError(
                f"MCP server {self.name!r} failed to start: {type(self._error).__name__}: {self._error}",
                details={"server": self.name},
            )

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            try:
                async with deadline(self.config.timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        client = self.client
        if client is None:
            raise BackendError(f"MCP server {self.name!r} is not connected", details={"server": self.name})
        out = await client.call_tool(tool, arguments, read_timeout_seconds=self.config.timeout)
        return to_tool_result(out)

    def as_tools(self) -> list[Tool]:
        allowed = set(self.config.tools) if self.config.tools is not None else None
        found: list[Tool] = []
        for mcp_tool in self.tools:
            if allowed is not None and mcp_tool.name not in allowed:
                continue
            definition = ToolDefinition(
                name=self.config.prefix + mcp_tool.name,
                description=mcp_tool.description or "",
                parameters=mcp_tool.input_schema or {"type": "object", "properties": {}},
            )
            found.append(Tool(definition=definition, run=self._caller(mcp_tool.name)))
        return found

    def _caller(self, tool: str) -> Any:
        async def run(arguments: dict[str, Any]) -> ToolResult:
            return await self.call(tool, arguments)

        return run


def to_tool_result(out: Any) -> ToolResult:
    """MCP content blocks → the tool result text: text blocks joined; other blocks named;
    structured content as JSON when there is no text."""
    parts: list[str] = []
    for block in out.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} content omitted]")
    text = "\n".join(parts)
    if not text and out.structured_content is not None:
        text = json.dumps(out.structured_content, ensure_ascii=False)
    if out.is_error:
        return ToolResult(result=text, stderr=text, exit_code=1, is_error=True)
    return ToolResult(result=text, stdout=text)


class McpBridge:
    """All configured servers; ``start()`` connects them, ``tools()`` lists what they offer."""

    def __init__(self, config: McpConfig) -> None:
        self.links = [McpServerLink(name, server) for name, server in config.servers.items()]

    async def start(self) -> None:
        started: list[McpServerLink] = []
        try:
            for link in self.links:
                await link.connect()
                started.append(link)
                log.info("MCP server %s: %d tools", link.name, len(link.tools))
        except BaseException:
            for link in reversed(started):
                await link.close()
            raise

    async def stop(self) -> None:
        for link in reversed(self.links):
            await link.close()

    def tools(self) -> Iterable[Tool]:
        for link in self.links:
            yield from link.as_tools()
