"""The tool agent with the sandboxed ``python`` tool (method ``tool_agent_python``), on the
real CPU model and the real tools worker (which refuses to start without its sandbox)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from scaffolding_nats.proto import ChatMessage, ChatTask, Job, SamplingParams
from scaffolding_nats.proto.tasks import ToolCall, Usage
from scaffolding_nats.runtime import handles
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers import OpenAIWorker
from scaffolding_nats.workers.tools.sandbox import Sandbox

from .conftest import Stack

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

SHORT = SamplingParams(max_tokens=40, temperature=0.0)
SCRIPTED_PYTHON_TAG = "scripted_python"
PROGRAM = "import os\nprint(sum(range(1, 101)), os.uname().nodename, os.getuid() != 0)"


class FirstTurnPython(OpenAIWorker):
    """The real model, except that a conversation without a tool result yet opens with a
    scripted call of the python tool (SmolLM2 under llama.cpp's chat format never emits tool
    calls). The program prints the sandbox's hostname, so its output can only come from there."""

    @handles(ChatTask)
    async def chat(self, task: ChatTask) -> None:
        if any(m.role == "tool" for m in task.messages):
            await super().chat(task)
            return
        call = ToolCall(id="call_py_0", name="python", arguments=json.dumps({"code": PROGRAM}))
        task.output_message = ChatMessage(role="assistant", content=None, tool_calls=[call])
        task.output_str = ""
        task.finish_reason = "tool_calls"
        task.usage = Usage(prompt_tokens=0, completion_tokens=1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scripted(stack: Stack) -> AsyncIterator[Stack]:
    worker = FirstTurnPython(stack.model.base_url, model=stack.model.model, max_concurrency=2, timeout=30)
    async with WorkerHost(stack.client.nc, worker, tags=[SCRIPTED_PYTHON_TAG], subjects=stack.subjects):
        yield stack


async def test_tool_agent_python_on_the_real_model(stack: Stack) -> None:
    """Whether a 135M model calls a tool is up to it: the job completes, and every python
    result in the transcript is what the sandbox prints for that program."""
    before = stack.tools_host.stats.completed
    job = Job(
        method="tool_agent_python",
        messages=[{"role": "user", "content": "What is the sum of the integers from 1 to 100?"}],
        params={"max_iterations": 2},
        sampling=SHORT,
    )
    result, _ = await stack.run(job)
    md = result.metadata
    assert 1 <= md["turns"] <= 2 and md["stop"] in ("completed", "max_iterations")
    assert stack.tools_host.stats.completed - before == md["tool_calls"]
    messages = md["messages"]
    assert messages[0]["role"] == "system" and "python" in messages[0]["content"]
    codes = {
        call["id"]: json.loads(call["arguments"] or "{}").get("code")
        for m in messages
        if m["role"] == "assistant"
        for call in m.get("tool_calls") or []
        if call["name"] == "python"
    }
    sandbox = Sandbox()
    for m in messages:
        if m["role"] == "tool" and m.get("name") == "python" and isinstance(codes.get(m["tool_call_id"]), str):
            rerun = await sandbox.run(codes[m["tool_call_id"]])
            if rerun.ok:
                assert m["content"] == rerun.stdout.strip()


async def test_a_python_call_runs_in_the_sandbox_end_to_end(scripted: Stack) -> None:
    """Chat worker → controller → tool_call tag over NATS → tools worker → bwrap → back to the
    real model, which writes the final turn."""
    before = scripted.tools_host.stats.completed
    job = Job(
        method="tool_agent_python",
        messages=[{"role": "user", "content": "What is the sum of the integers from 1 to 100?"}],
        params={"max_iterations": 3, "chat_tag": SCRIPTED_PYTHON_TAG},
        sampling=SHORT,
    )
    result, _ = await scripted.run(job)
    md = result.metadata
    assert md["tool_calls"] == 1 and md["turns"] == 2 and md["stop"] == "completed"
    assert scripted.tools_host.stats.completed - before == 1
    tool_turns = [m for m in md["messages"] if m["role"] == "tool"]
    assert [(m["name"], m["content"]) for m in tool_turns] == [("python", "5050 sandbox True")]
    assert md["messages"][-1]["role"] == "assistant" and result.text.strip()
    assert result.num_tasks == 3  # chat, tool call, chat
