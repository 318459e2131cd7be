"""MCP servers bridged into the tools worker: a small MCP server from this suite
(``mcp_server.py``) runs over stdio and over streamable HTTP on 127.0.0.1; its tools are
listed by a tools worker and called as ``ToolCallTask`` over a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from nats.aio.client import Client

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.devstack.nats_server import free_port
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import ChatMessage, ChatTask, Job, JobEventType, Subjects, ToolCall
from scaffolding_nats.proto.errors import ErrorCode
from scaffolding_nats.proto.tasks import TaskStatus, ToolCallTask, ToolDefinition
from scaffolding_nats.runtime import Worker, handles
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.tools import CALCULATOR, Tool
from scaffolding_nats.workers.tools.mcp_bridge import load_config
from scaffolding_nats.workers.tools_worker import ToolsWorker

from ..procs import worker_argv

SERVER = Path(__file__).with_name("mcp_server.py")


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """The test MCP server on streamable HTTP, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "the MCP HTTP server exited"
                assert time.monotonic() < deadline, "the MCP HTTP server did not listen within 30s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def config(http_url: str) -> dict[str, object]:
    return {
        "servers": {
            "local": {"command": sys.executable, "args": [str(SERVER), "stdio"], "prefix": "local_", "timeout": 20},
            "web": {
                "url": http_url,
                "headers": {"X-Scaffolding-Test": "1"},
                "prefix": "web_",
                "tools": ["add", "whoami"],
                "timeout": 20,
            },
        }
    }


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


async def call(remote: RemoteWorker, tool: str, arguments: dict[str, object]) -> ToolCallTask:
    task = ToolCallTask(tool_name=tool, arguments=json.dumps(arguments))
    await asyncio.wait_for(remote.run_task(task), 30)
    return task


async def test_mcp_tools_are_called_over_nats(nc: Client, prefix: str, http_server: str) -> None:
    worker = ToolsWorker(python=False, mcp_config=config(http_server))
    subjects = Subjects(prefix)
    async with WorkerHost(nc, worker, tags=["tool_call"], subjects=subjects):
        names = [d.name for d in worker.definitions()]
        assert names == ["calculator", "local_add", "local_whoami", "local_fail", "web_add", "web_whoami"]
        add = next(d for d in worker.definitions() if d.name == "local_add")
        assert add.description == "Add two integers."
        assert add.parameters["required"] == ["a", "b"]
        remote = RemoteWorker(nc, subjects=subjects)
        await remote.start()
        try:
            local = await call(remote, "local_add", {"a": 2, "b": 40})
            assert local.status is TaskStatus.SUCCESS and local.result == "42" and not local.is_error
            web = await call(remote, "web_add", {"a": 20, "b": 22})
            assert web.status is TaskStatus.SUCCESS and web.result == "42"
            who_local, who_web = await asyncio.gather(
                call(remote, "local_whoami", {}), call(remote, "web_whoami", {})
            )
            assert (who_local.result or "").endswith(" stdio") and (who_web.result or "").endswith(" http")
            stdio_pid = int((who_local.result or "").split()[0])
            failed = await call(remote, "local_fail", {"reason": "no"})
            assert failed.status is TaskStatus.SUCCESS and failed.is_error and failed.exit_code == 1
            bad_args = await call(remote, "local_add", {"a": "two"})
            assert bad_args.is_error
            hidden = await call(remote, "web_fail", {"reason": "x"})  # not in the allow-list
            assert hidden.status is TaskStatus.NOT_SUPPORTED
            calc = await call(remote, "calculator", {"expression": "6 * 7"})
            assert calc.result == "42"
            # the stdio server dies: its tools answer with an error, the others keep working
            os.kill(stdio_pid, signal.SIGKILL)
            started = time.monotonic()
            dead = await call(remote, "local_add", {"a": 1, "b": 1})
            assert dead.status is TaskStatus.SUCCESS and dead.is_error and "local" in (dead.stderr or "")
            assert time.monotonic() - started < 20
            alive_web = await call(remote, "web_add", {"a": 1, "b": 1})
            assert alive_web.result == "2"
        finally:
            await remote.stop()
    # stopping the worker stops the stdio server it started
    deadline = time.monotonic() + 10
    while alive(stdio_pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - a process we do not own
        await asyncio.sleep(0.05)
    assert not alive(stdio_pid)


class AddingModel(Worker):
    """A scripted chat model: calls ``local_add`` when it is offered, then answers with the
    tool's result. Records the tool names each turn offered."""

    def __init__(self) -> None:
        super().__init__()
        self.offered: list[list[str]] = []

    @handles(ChatTask)
    async def chat(self, task: ChatTask) -> None:
        self.offered.append([t.name for t in task.tools or []])
        results = [m.content for m in task.messages if m.role == "tool"]
        if results:
            task.output_message = ChatMessage(role="assistant", content=f"the sum is {results[0]}")
        elif "local_add" in self.offered[-1]:
            call = ToolCall(id="c1", name="local_add", arguments=json.dumps({"a": 19, "b": 23}))
            task.output_message = ChatMessage(role="assistant", content=None, tool_calls=[call])
        else:
            task.output_message = ChatMessage(role="assistant", content="no tool")
        task.output_str = task.output_message.content or ""


async def test_the_tool_agent_discovers_and_calls_mcp_tools_over_nats(
    nc: Client, prefix: str, http_server: str
) -> None:
    """Job → controller (tool_agent, discover_tools) → tools/list and the MCP tool call as
    ToolCallTasks over NATS → the tools worker → the stdio MCP server."""
    subjects = Subjects(prefix)
    model = AddingModel()
    tools = ToolsWorker(python=False, mcp_config=config(http_server))
    async with (
        WorkerHost(nc, model, tags=["generation"], subjects=subjects),
        WorkerHost(nc, tools, tags=["tool_call"], subjects=subjects) as tools_host,
        ControllerService(nc, load_registry(), subjects=subjects, max_job_seconds=60),
    ):
        job = Job(method="tool_agent", prompt="add 19 and 23", params={"discover_tools": True})
        events = [e async for e in JobClient(nc, subjects=subjects).events(job, timeout=60)]
        last = events[-1]
        assert last.type is JobEventType.RESULT, last.error
        assert last.result is not None and last.result.text == "the sum is 42"
        assert model.offered[0] == [d.name for d in tools.definitions()]
        assert last.result.metadata["tool_calls"] == 1
        assert tools_host.stats.completed == 2  # tools/list, then local_add


async def test_the_service_reads_the_config_file_from_the_environment(
    nats_server: NatsServer, nc: Client, prefix: str, tmp_path: Path, http_server: str
) -> None:
    path = tmp_path / "mcp.yaml"
    path.write_text(yaml.safe_dump(config(http_server)))
    proc = await asyncio.create_subprocess_exec(
        *worker_argv(nats_server.url, prefix, "tools", tags="tool_call"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SCAF_MCP_CONFIG": str(path), "SCAF_LOG_LEVEL": "WARNING"},
    )
    remote = RemoteWorker(nc, subjects=Subjects(prefix))
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        await remote.start()
        web, local, py = await asyncio.gather(
            call(remote, "web_add", {"a": 1, "b": 2}),
            call(remote, "local_add", {"a": 3, "b": 4}),
            call(remote, "python", {"code": "print(2 ** 10)"}),
        )
        assert (web.result, local.result, py.result) == ("3", "7", "1024")
    finally:
        await remote.stop()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def test_a_server_that_cannot_start_fails_the_worker_start(nc: Client, prefix: str) -> None:
    worker = ToolsWorker(
        python=False, mcp_config={"servers": {"broken": {"command": "/nonexistent/mcp-server", "timeout": 10}}}
    )
    with pytest.raises(ScaffoldingError) as info:
        async with WorkerHost(nc, worker, tags=["tool_call"], subjects=Subjects(prefix)):
            pytest.fail("served without its MCP server")
    assert info.value.code is ErrorCode.BACKEND_ERROR and "broken" in info.value.message


async def test_name_clashes_are_refused(nc: Client, prefix: str, http_server: str) -> None:
    worker = ToolsWorker(python=False, mcp_config={"servers": {"web": {"url": http_server}}})
    worker.add_tool(Tool(definition=ToolDefinition(name="add"), run=CALCULATOR.run))
    with pytest.raises(ValueError, match="clashes"):
        async with WorkerHost(nc, worker, tags=["tool_call"], subjects=Subjects(prefix)):
            pytest.fail("served with two tools of one name")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"servers": {"x": {}}}, "exactly one of"),
        ({"servers": {"x": {"command": "a", "url": "http://b"}}}, "exactly one of"),
        ({"servers": {"x": {"command": "a", "timeout": 0}}}, "timeout"),
        ({"servers": {"x": {"command": "a", "unknown": 1}}}, "unknown"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_the_common_mcp_servers_shape_is_accepted() -> None:
    cfg = load_config({"mcpServers": {"fs": {"command": "npx", "args": ["server-fs", "/data"]}}})
    assert cfg.servers["fs"].args == ["server-fs", "/data"]
