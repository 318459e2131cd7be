from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from scaffolding_nats.errors import BudgetExhausted, ProtocolError, TaskFailed
from scaffolding_nats.methods import NativeChatController, NativeGenerationController
from scaffolding_nats.methods.registry import MethodConfigError
from scaffolding_nats.proto import (
    Budget,
    ChatMessage,
    ChatTask,
    ErrorCode,
    GenerationTask,
    StreamingChatTask,
    StreamingGenerationTask,
    ToolCall,
    ToolDefinition,
)
from scaffolding_nats.runtime import Controller, ControllerGen, Output, ParallelProcess, streams

from .scripted import ScriptedWorker, run


async def test_sampling_defaults_are_none_and_fill_only_unset_fields() -> None:
    worker = ScriptedWorker(lambda t: f"echo {t.input_str}")
    out = await run(NativeGenerationController(), worker, "hi")
    assert out.output.text == "echo hi"
    sent = worker.of(GenerationTask)[0]
    assert (sent.temperature, sent.max_tokens, sent.seed) == (None, None, None)

    worker = ScriptedWorker(lambda t: "x")
    await run(NativeGenerationController(temperature=0.7, max_tokens=5), worker, "hi", temperature=0.1)
    sent = worker.of(GenerationTask)[0]
    assert (sent.temperature, sent.max_tokens) == (0.1, 5)  # the request's own value wins


class _Caller(Controller):
    """Yields a task with its own sampling to a native sub-controller; reads results back."""

    def __init__(self) -> None:
        super().__init__()
        self.sub = NativeGenerationController(temperature=0.9, top_p=0.5)

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        task = GenerationTask(input_str=prompt, temperature=0.0)
        yield ParallelProcess([self.sub], [[task]])
        return Output(text=task.output_str or "", metadata={"temp": task.temperature, "top_p": task.top_p})


async def test_results_land_on_callers_task_and_caller_overrides() -> None:
    worker = ScriptedWorker(lambda t: "done")
    out = await run(_Caller(), worker, "p")
    assert out.output.text == "done"
    assert out.output.metadata == {"temp": 0.0, "top_p": 0.5}


async def test_failure_raises_typed_error() -> None:
    worker = ScriptedWorker(lambda t: RuntimeError("backend down"))
    with pytest.raises(TaskFailed, match="backend down"):
        await run(NativeGenerationController(), worker, "p")


async def test_streaming_emits_deltas_and_copies_back() -> None:
    worker = ScriptedWorker(lambda t: "one two three four five")
    events: list[tuple[str, dict[str, Any]]] = []
    out = await run(NativeGenerationController(stream=True, streaming_step=2), worker, "p", events=events)
    partials = [p["text"] for kind, p in events if kind == "partial"]
    assert partials == ["one two", " three four", " five"]
    assert out.output.text == "one two three four five"
    assert worker.of(StreamingGenerationTask)[0].streaming_step == 2
    assert worker.finished and not worker.closed
    assert out.usage.completion_tokens == 5


async def test_budget_clamps_and_stops() -> None:
    worker = ScriptedWorker(lambda t: "a b c d e f")
    out = await run(NativeGenerationController(), worker, "p", budget=Budget(max_tokens=3))
    assert out.output.text == "a b c"
    with pytest.raises(BudgetExhausted):
        await run(_Twice(), worker, "p", budget=Budget(max_tokens=3))


class _Twice(Controller):
    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        sub = NativeGenerationController()
        for _ in range(2):
            yield from sub.process([GenerationTask(input_str=prompt)])
        return Output(text="")


def test_bad_sampling_parameter_is_named() -> None:
    from scaffolding_nats.methods.base import ParamError

    with pytest.raises(ParamError) as err:
        NativeGenerationController(temprature=1.0)
    assert err.value.param == "temprature"
    with pytest.raises(ParamError) as err:
        NativeGenerationController(top_p=2.0)
    assert err.value.param == "top_p"
    assert issubclass(MethodConfigError, ValueError)


async def test_chat_results_copied_to_callers_tasks() -> None:
    worker = ScriptedWorker(chat=lambda t: f"reply to {t.messages[-1].content}")
    out = await run(NativeChatController(temperature=0.2), worker, [{"role": "user", "content": "hey"}])
    assert out.output.text == "reply to hey"
    assert worker.of(ChatTask)[0].temperature == 0.2

    class Wrap(Controller):
        def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
            chat = ChatTask(messages=[ChatMessage(role="user", content=prompt)])
            gen = GenerationTask(input_str=prompt)
            sub = NativeChatController()
            yield ParallelProcess([sub], [[chat, gen]])
            assert chat.output_message is not None
            return Output(text=f"{chat.output_message.content}|{gen.output_str}|{gen.ok}")

    out = await run(Wrap(), worker, "yo")
    assert out.output.text == "reply to yo|reply to yo|True"


async def test_chat_failure_raises() -> None:
    worker = ScriptedWorker(chat=lambda t: RuntimeError("nope"))
    with pytest.raises(TaskFailed):
        await run(NativeChatController(), worker, "x")


async def test_a_streamed_chat_job_sends_token_deltas_only_when_the_job_streams() -> None:
    """``chat`` streams the job's own turn when the job asks to (``Job.stream``): the deltas
    add up to the answer; a job that does not stream runs one plain chat task."""
    worker = ScriptedWorker(chat=lambda t: "one two three four five")
    events: list[tuple[str, dict[str, Any]]] = []
    out = await run(NativeChatController(streaming_step=2), worker, "hi", events=events, stream=True)
    partials = [p["text"] for kind, p in events if kind == "partial"]
    assert len(partials) > 1 and "".join(partials) == out.output.text == "one two three four five"
    (sent,) = worker.seen
    assert isinstance(sent, StreamingChatTask) and sent.streaming_step == 2
    assert out.num_tasks == 1 and out.usage.completion_tokens == 5

    events.clear()
    worker = ScriptedWorker(chat=lambda t: "one two three")
    out = await run(NativeChatController(), worker, "hi", events=events)
    assert out.output.text == "one two three" and not [e for e in events if e[0] == "partial"]
    assert [type(t) for t in worker.seen] == [ChatTask]
    worker = ScriptedWorker(chat=lambda t: "one two three")
    await run(NativeChatController(stream=False), worker, "hi", stream=True)
    assert [type(t) for t in worker.seen] == [ChatTask]  # stream=False: never


async def test_a_streamed_chat_still_returns_the_models_tool_calls() -> None:
    call = ToolCall(id="call_1", name="lookup", arguments='{"q": "x"}')
    worker = ScriptedWorker(chat=lambda t: ChatMessage(role="assistant", content="Let me look.", tool_calls=[call]))
    events: list[tuple[str, dict[str, Any]]] = []
    tools = [ToolDefinition(name="lookup")]
    out = await run(NativeChatController(tools=tools), worker, "find x", events=events, stream=True)
    assert out.output.tool_calls == [call] and out.output.finish_reason == "tool_calls"
    assert "".join(p["text"] for kind, p in events if kind == "partial") == out.output.text == "Let me look."
    assert isinstance(worker.seen[0], StreamingChatTask) and worker.seen[0].tools == tools


async def test_sub_turns_of_other_methods_are_not_streamed_unless_asked() -> None:
    """A chat inside another method is not the job's answer: no partials of it by default."""

    class Wrap(Controller):
        def __init__(self, sub: NativeChatController) -> None:
            super().__init__()
            self.sub = sub

        def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
            chat = ChatTask(messages=[ChatMessage(role="user", content=prompt)])
            yield from self.sub.process([chat])
            return Output(text=f"[{chat.output_str}]")

    events: list[tuple[str, dict[str, Any]]] = []
    worker = ScriptedWorker(chat=lambda t: "a b c")
    out = await run(Wrap(NativeChatController()), worker, "x", events=events, stream=True)
    assert out.output.text == "[a b c]" and not events and [type(t) for t in worker.seen] == [ChatTask]
    out = await run(Wrap(NativeChatController(stream=True, streaming_step=1)), worker, "x", events=events)
    assert out.output.text == "[a b c]" and "".join(p["text"] for _, p in events) == "a b c"


async def test_a_worker_that_does_not_know_streamed_chats_gets_the_turn_plain() -> None:
    """An older (or other-language) worker answers ``unknown_task_type`` to ``streaming_chat``:
    the turn runs again as a plain chat, and the client still gets the text."""

    class Old(ScriptedWorker):
        @streams(StreamingChatTask)
        async def chat_stream(self, task: StreamingChatTask) -> AsyncIterator[int]:
            raise ProtocolError("unknown task kind 'streaming_chat'", code=ErrorCode.UNKNOWN_TASK_TYPE)
            yield 0  # pragma: no cover

    worker = Old(chat=lambda t: "plain answer")
    events: list[tuple[str, dict[str, Any]]] = []
    out = await run(NativeChatController(), worker, "hi", events=events, stream=True)
    assert out.output.text == "plain answer" and [p["text"] for _, p in events] == ["plain answer"]
    assert [type(t) for t in worker.seen] == [ChatTask]
