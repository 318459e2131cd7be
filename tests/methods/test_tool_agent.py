from __future__ import annotations

import json
from typing import Any

import pytest

from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import ToolAgentController
from scaffolding_nats.proto import ChatMessage, ChatTask, ToolCall, ToolCallTask, ToolDefinition

from .scripted import ScriptedWorker, run

TOOLS: list[ToolDefinition | dict[str, Any]] = [
    {"name": "add", "description": "add numbers", "parameters": {"type": "object"}},
    {"name": "mul", "description": "multiply"},
]


def model(task: ChatTask) -> ChatMessage:
    """Asks for both tools in its first turn, answers from their results in the second."""
    results = [m.content for m in task.messages if m.role == "tool"]
    if not results:
        return ChatMessage(
            role="assistant",
            content=None,
            tool_calls=[
                ToolCall(id="c1", name="add", arguments=json.dumps({"a": 2, "b": 3})),
                ToolCall(id="c2", name="mul", arguments=json.dumps({"a": 2, "b": 3})),
            ],
        )
    return ChatMessage(role="assistant", content=f"results: {', '.join(r or '' for r in results)}")


def tools(task: ToolCallTask) -> str | Exception:
    args = json.loads(task.arguments)
    if task.tool_name == "mul":
        return RuntimeError("mul is broken")
    return str(args["a"] + args["b"])


async def test_agent_loop_runs_tools_concurrently_and_answers() -> None:
    worker = ScriptedWorker(chat=model, tool=tools, delay=0.01)
    ctl = ToolAgentController(TOOLS, max_iterations=4, system_prompt="be brief", temperature=0.0)
    out = await run(ctl, worker, "what is 2+3 and 2*3?")
    chats = worker.of(ChatTask)
    calls = worker.of(ToolCallTask)
    assert len(chats) == 2
    assert [t.name for t in chats[0].tools or []] == ["add", "mul"]
    assert chats[0].messages[0].role == "system" and chats[0].temperature == 0.0
    assert [(c.tool_name, c.call_id, c.worker_tag) for c in calls] == [
        ("add", "c1", "tool_call"),
        ("mul", "c2", "tool_call"),
    ]
    roles = [m.role for m in chats[1].messages]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert out.output.text == "results: 5, error: tool 'mul' failed: RuntimeError: mul is broken"
    assert out.output.metadata["tool_calls"] == 2 and out.output.metadata["stop"] == "completed"
    assert out.output.metadata["turns"] == 2


async def test_agent_stops_at_max_iterations() -> None:
    def loop_forever(task: ChatTask) -> ChatMessage:
        return ChatMessage(
            role="assistant",
            content="again",
            tool_calls=[ToolCall(id="x", name="add", arguments='{"a":1,"b":1}')],
        )

    worker = ScriptedWorker(chat=loop_forever, tool=tools)
    out = await run(ToolAgentController(TOOLS, max_iterations=2), worker, "go")
    assert len(worker.of(ChatTask)) == 2 and len(worker.of(ToolCallTask)) == 2
    assert out.output.metadata["stop"] == "max_iterations"
    assert out.output.text == "again"


async def test_agent_chat_failure_is_typed() -> None:
    worker = ScriptedWorker(chat=lambda t: RuntimeError("llm down"), tool=tools)
    with pytest.raises(TaskFailed, match="chat turn 1 failed"):
        await run(ToolAgentController(TOOLS), worker, "go")


def test_bad_tool_definition_is_named() -> None:
    from scaffolding_nats.methods._common import ParamError

    with pytest.raises(ParamError) as err:
        ToolAgentController([{"description": "no name"}])
    assert err.value.param == "tools"


async def test_agent_discovers_the_tools_workers_tools() -> None:
    """``discover_tools``: one ``tools/list`` call first; its definitions join the configured
    ones (configured first, no duplicates), filtered by name when a list is given."""
    listed = [{"name": "add", "description": "dup"}, {"name": "search"}, {"name": "fetch"}]

    def tool_or_listing(task: ToolCallTask) -> str | Exception:
        return json.dumps(listed) if task.tool_name == "tools/list" else tools(task)

    worker = ScriptedWorker(chat=model, tool=tool_or_listing)
    await run(ToolAgentController(TOOLS, discover_tools=True), worker, "go")
    chats = worker.of(ChatTask)
    assert [t.name for t in chats[0].tools or []] == ["add", "mul", "search", "fetch"]
    assert chats[0].tools is not None and chats[0].tools[0].description == "add numbers"
    assert worker.of(ToolCallTask)[0].tool_name == "tools/list"

    worker = ScriptedWorker(chat=model, tool=tool_or_listing)
    await run(ToolAgentController(None, discover_tools=["fetch"]), worker, "go")
    assert [t.name for t in worker.of(ChatTask)[0].tools or []] == ["fetch"]


async def test_agent_fails_typed_when_tools_cannot_be_listed() -> None:
    worker = ScriptedWorker(chat=model, tool=lambda t: "not json")
    with pytest.raises(TaskFailed, match="could not list the tools"):
        await run(ToolAgentController(TOOLS, discover_tools=True), worker, "go")
    with pytest.raises(ValueError, match="discover_tools"):
        ToolAgentController(TOOLS, discover_tools="yes")  # type: ignore[arg-type]
