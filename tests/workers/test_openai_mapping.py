"""Task fields → request arguments, and streamed chunks → task results, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from scaffolding_nats.proto.tasks import (
    ChatMessage,
    ChatTask,
    GenerationTask,
    ToolCall,
    ToolDefinition,
)
from scaffolding_nats.workers import NotSupported
from scaffolding_nats.workers.openai_params import chat_params, completion_params
from scaffolding_nats.workers.openai_results import StreamAccumulator


def _data(fields: dict[str, Any]) -> dict[str, Any]:
    return fields


def test_every_sampling_field_reaches_the_completion_request() -> None:
    task = GenerationTask(
        input_str="2+2=",
        max_tokens=7,
        min_tokens=2,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        n=3,
        seed=11,
        stop=["\n"],
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logit_bias={"50256": -100.0},
        num_logprobs=4,
        ignore_eos=True,
        echo=False,
        suffix="!",
        best_of=3,
    )
    params = completion_params(task, "m")
    assert params == {
        "model": "m",
        "prompt": "2+2=",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 11,
        "stop": ["\n"],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logit_bias": {"50256": -100.0},
        "n": 3,
        "logprobs": 4,
        "echo": False,
        "suffix": "!",
        "best_of": 3,
        "extra_body": {"top_k": 40, "min_tokens": 2, "ignore_eos": True},
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_unset_fields_leave_the_backend_defaults() -> None:
    params = completion_params(GenerationTask(input_str="hi"), "m", stream=False)
    assert params == {"model": "m", "prompt": "hi"}


def test_token_prompts_and_per_sample_n() -> None:
    params = completion_params(GenerationTask(input_tokens=[1, 2, 3], n=4), "m", n=1)
    assert params["prompt"] == [1, 2, 3]
    assert "n" not in params


def test_refusals_are_typed() -> None:
    with pytest.raises(NotSupported):
        completion_params(GenerationTask(), "m")
    with pytest.raises(NotSupported):
        completion_params(GenerationTask(input_str="x", return_context_logits=True), "m")
    msgs = [ChatMessage(role="user", content="hi")]
    with pytest.raises(NotSupported):
        chat_params(ChatTask(messages=msgs, n=2), "m")
    with pytest.raises(NotSupported):
        chat_params(ChatTask(messages=msgs, suffix="x"), "m")


def test_chat_request_maps_messages_tools_and_logprobs() -> None:
    task = ChatTask(
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content="2+2?"),
            ChatMessage(
                role="assistant",
                tool_calls=[ToolCall(id="c1", name="calculator", arguments='{"expression": "2+2"}')],
            ),
            ChatMessage(role="tool", content="4", tool_call_id="c1", name="calculator"),
        ],
        tools=[ToolDefinition(name="calculator", description="math")],
        tool_choice="calculator",
        num_logprobs=3,
        temperature=0.0,
        top_k=5,
    )
    params = chat_params(task, "m")
    assert params["messages"][0] == {"role": "system", "content": "be brief"}
    assert params["messages"][2]["tool_calls"] == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
        }
    ]
    # llama.cpp's server rejects a null content: a tools-only assistant turn sends "".
    assert params["messages"][2]["content"] == ""
    assert params["messages"][3] == {
        "role": "tool",
        "content": "4",
        "tool_call_id": "c1",
        "name": "calculator",
    }
    assert params["tools"][0]["function"]["name"] == "calculator"
    assert params["tools"][0]["type"] == "function"
    assert params["tool_choice"] == {"type": "function", "function": {"name": "calculator"}}
    assert params["logprobs"] is True and params["top_logprobs"] == 3
    assert params["temperature"] == 0.0
    assert params["extra_body"] == {"top_k": 5}
    assert chat_params(ChatTask(messages=task.messages, tool_choice="auto"), "m")["tool_choice"] == "auto"


def _completion_chunk(text: str, lp: float | None, finish: str | None = None) -> Completion:
    logprobs = None
    if lp is not None:
        logprobs = {
            "tokens": [text],
            "token_logprobs": [lp],
            "top_logprobs": [{text: lp, "other": lp - 1}],
            "text_offset": [0],
        }
    return Completion.construct(
        **_data(
            {
                "id": "x",
                "created": 0,
                "model": "m",
                "object": "text_completion",
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
            }
        )
    )


def test_completion_stream_accumulates_text_logprobs_and_counts() -> None:
    acc = StreamAccumulator()
    assert acc.feed_completion(_completion_chunk(" Paris", -0.1)) == 1
    assert acc.ttft_s is not None
    assert acc.feed_completion(_completion_chunk(".", -0.5)) == 1
    assert acc.feed_completion(_completion_chunk("", None, "stop")) == 0
    acc.finish()
    out = acc.choice(0)
    assert out.text == " Paris." and out.finish_reason == "stop"
    assert [t.token for t in out.logprobs] == [" Paris", "."]
    assert out.logprobs[0].top is not None and [t.token for t in out.logprobs[0].top] == [" Paris", "other"]
    usage = acc.final_usage(prompt_chars=20)
    assert usage.completion_tokens == 2 and usage.prompt_tokens == 5
    assert acc.usage_estimated
    assert acc.latency_s >= acc.ttft_s


# A streamed completion chunk as llama.cpp's llama-server sends it (captured 2026-12-01): the
# log-probs come in the chat API's shape, not the completions API's parallel lists.
LLAMA_SERVER_CHUNK = {
    "choices": [
        {
            "text": "2",
            "index": 0,
            "logprobs": {
                "content": [
                    {
                        "id": 17,
                        "token": "2",
                        "bytes": [50],
                        "logprob": -0.28,
                        "top_logprobs": [
                            {"id": 17, "token": "2", "bytes": [50], "logprob": -0.28},
                            {"id": 18, "token": "3", "bytes": [51], "logprob": -1.9},
                        ],
                    }
                ]
            },
            "finish_reason": None,
        }
    ],
    "created": 1796152639,
    "model": "qwen2.5-coder-0.5b-instruct",
    "object": "text_completion",
    "id": "chatcmpl-H6l9",
}


def test_completion_logprobs_in_llama_servers_chat_shape_are_read() -> None:
    acc = StreamAccumulator()
    assert acc.feed_completion(Completion.construct(**_data(LLAMA_SERVER_CHUNK))) == 1
    acc.finish()
    out = acc.choice(0)
    assert out.logprobs is not None and [(t.token, t.logprob) for t in out.logprobs] == [("2", -0.28)]
    top = out.logprobs[0].top
    assert top is not None and [(t.token, t.logprob) for t in top] == [("2", -0.28), ("3", -1.9)]


def test_server_usage_wins_over_counting() -> None:
    acc = StreamAccumulator()
    acc.feed_completion(_completion_chunk("a", None))
    usage_chunk = Completion.construct(
        **_data(
            {
                "id": "x",
                "created": 0,
                "model": "m",
                "object": "text_completion",
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
            }
        )
    )
    acc.feed_completion(usage_chunk)
    assert acc.final_usage(0).prompt_tokens == 9
    assert not acc.usage_estimated


def _chat_chunk(delta: dict[str, object], finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.construct(
        **_data(
            {
                "id": "x",
                "created": 0,
                "model": "m",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )
    )


def test_chat_stream_assembles_tool_calls() -> None:
    acc = StreamAccumulator()
    acc.feed_chat(_chat_chunk({"role": "assistant"}))
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"expr'}}
    acc.feed_chat(_chat_chunk({"tool_calls": [first]}))
    acc.feed_chat(_chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ession": "1"}'}}]}))
    acc.feed_chat(_chat_chunk({}, "tool_calls"))
    message = acc.choice(0).message()
    assert message.content is None
    assert message.tool_calls == [ToolCall(id="c1", name="calc", arguments='{"expression": "1"}')]
    assert acc.choice(0).finish_reason == "tool_calls"
