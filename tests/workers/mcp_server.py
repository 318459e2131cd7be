"""A small MCP server for the tests: ``python mcp_server.py stdio`` or ``... http PORT``
(streamable HTTP on 127.0.0.1)."""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("scaffolding-test-tools")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def whoami() -> str:
    """Which server process answered (its pid and transport)."""
    return f"{os.getpid()} {sys.argv[1]}"


@app.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason."""
    raise ValueError(reason)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        app.run()
    else:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
