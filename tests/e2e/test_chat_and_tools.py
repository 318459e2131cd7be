"""Chat jobs given as messages, and the tool agent with a tools worker on the bus."""

from __future__ import annotations

import pytest

from scaffolding_nats.proto import Job, JobEventType, SamplingParams
from scaffolding_nats.workers.tools.calculator import DEFINITION as CALCULATOR

from .conftest import SCRIPTED_CHAT_TAG, FirstTurnCalculator, Stack

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

SHORT = SamplingParams(max_tokens=40, temperature=0.0)


async def test_chat_job_takes_a_whole_conversation(stack: Stack) -> None:
    """System prompt and earlier turns travel as messages to the chat controller."""
    messages = [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    result, _ = await stack.run(Job(method="chat", messages=messages, sampling=SHORT))
    assert result.text.strip()
    assert result.num_tasks == 1 and set(result.usage_by_controller) == {"chat"}
    assert result.usage.completion_tokens > 0
    assert result.finish_reason in ("stop", "length")


async def test_a_streamed_chat_job_sends_the_turns_token_deltas(stack: Stack) -> None:
    """``chat`` streams its turn when the job streams: several partial events, whose texts
    concatenated are the result's text; a job with ``stream: false`` gets none."""
    messages = [{"role": "user", "content": "Name five colours, one per line."}]
    result, events = await stack.run(Job(method="chat", messages=messages, sampling=SHORT, stream=True))
    partials = [e.text or "" for e in events if e.type is JobEventType.PARTIAL]
    assert len(partials) > 1 and "".join(partials) == result.text and result.text.strip()
    assert result.num_tasks == 1 and result.usage.completion_tokens > 0
    result, events = await stack.run(Job(method="chat", messages=messages, sampling=SHORT, stream=False))
    assert result.text.strip() and not [e for e in events if e.type is JobEventType.PARTIAL]


async def test_completion_method_renders_messages_with_the_chat_template(stack: Stack) -> None:
    """A completion-style method gets the conversation in the model's chat format: the
    answer is an assistant reply, not a continuation of the template's tags."""
    job = Job(method="native", messages=[{"role": "user", "content": "Say hello."}], sampling=SHORT)
    result, _ = await stack.run(job)
    assert result.text.strip() and "<|im_start|>" not in result.text


async def test_tool_agent_with_the_real_model_runs_its_loop(stack: Stack) -> None:
    """The calculator is offered; whether a 135M model calls it is up to the model, so only
    the loop's shape and the result's types are checked."""
    before = stack.tools_host.stats.completed
    job = Job(
        method="tool_agent",
        messages=[{"role": "user", "content": "Use the calculator to compute 17 * 23."}],
        params={"tools": [CALCULATOR.model_dump()], "max_iterations": 2},
        sampling=SHORT,
    )
    result, _ = await stack.run(job)
    md = result.metadata
    assert isinstance(md["turns"], int) and 1 <= md["turns"] <= 2
    assert isinstance(md["tool_calls"], int) and md["stop"] in ("completed", "max_iterations")
    assert result.num_tasks == md["turns"] + md["tool_calls"]
    assert stack.tools_host.stats.completed - before == md["tool_calls"]
    assert md["messages"][0]["role"] == "user" and md["messages"][-1]["role"] in ("assistant", "tool")
    assert result.usage.completion_tokens > 0


async def test_tool_agent_calls_the_tools_worker_over_the_bus(stack: Stack) -> None:
    """A scripted first turn calls the calculator; the call runs on the tools worker, its
    result goes back to the real model, which writes the final turn."""
    before = stack.tools_host.stats.completed
    job = Job(
        method="tool_agent",
        messages=[{"role": "user", "content": "What is 17 * 23? Use the calculator."}],
        params={"tools": [CALCULATOR.model_dump()], "max_iterations": 3, "chat_tag": SCRIPTED_CHAT_TAG},
        sampling=SHORT,
    )
    result, _ = await stack.run(job)
    md = result.metadata
    assert md["tool_calls"] == 1 and md["turns"] == 2 and md["stop"] == "completed"
    assert stack.tools_host.stats.completed - before == 1
    tool_turns = [m for m in md["messages"] if m["role"] == "tool"]
    assert len(tool_turns) == 1
    assert tool_turns[0]["content"].strip() == FirstTurnCalculator.RESULT
    assert tool_turns[0]["name"] == "calculator"
    assert md["messages"][-1]["role"] == "assistant" and result.text.strip()
    assert result.num_tasks == 3  # chat, tool call, chat
    assert set(result.usage_by_controller) == {"tool_agent"}
