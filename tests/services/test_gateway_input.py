"""The gateway never answers 500 to bad input, and its OpenAI surface is honest: what it does
not support is rejected with OpenAI's error shape; ``n`` gives n choices; client tools come
back as ``tool_calls``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import nats
import openai
import pytest

from scaffolding_nats.proto import ChatMessage, ChatTask, GenerationTask, ToolCall, Usage
from scaffolding_nats.runtime import Worker, handles
from scaffolding_nats.workers.synthetic import SyntheticWorker

CHAT = {"model": "native", "messages": [{"role": "user", "content": "a b"}]}


def _deep(n: int) -> Any:
    node: Any = 1
    for _ in range(n):
        node = {"a": node}
    return node


def _assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return error


BAD_BODIES: list[tuple[str, str, dict[str, Any], int]] = [
    ("max_tokens_2_64", "/v1/chat/completions", {**CHAT, "max_tokens": 2**64}, 400),
    ("seed_2_64", "/v1/chat/completions", {**CHAT, "seed": 2**64}, 400),
    ("seed_neg", "/v1/completions", {"model": "native", "prompt": "x", "seed": -(2**70)}, 400),
    ("huge_int_param", "/v1/completions", {"model": "native", "prompt": "x", "method_params": {"k": 2**65}}, 400),
    ("deep_params", "/v1/chat/completions", {**CHAT, "method_params": _deep(300)}, 400),
    (
        "tool_without_name",
        "/v1/chat/completions",
        {**CHAT, "model": "chat", "tools": [{"type": "function", "function": {}}]},
        400,
    ),
    ("tool_not_a_map", "/v1/chat/completions", {**CHAT, "tools": ["x"]}, 400),
    ("stream_yes", "/v1/chat/completions", {**CHAT, "stream": "yes"}, 400),
    ("max_tokens_float", "/v1/chat/completions", {**CHAT, "max_tokens": 2.0}, 400),
    ("temperature_text", "/v1/chat/completions", {**CHAT, "temperature": "0.5"}, 400),
    ("unknown_field", "/v1/chat/completions", {**CHAT, "frobnicate": 1}, 400),
    ("logprobs", "/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2}, 400),
    ("response_format_json", "/v1/chat/completions", {**CHAT, "response_format": {"type": "json_object"}}, 400),
    ("stream_options_alone", "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, 400),
    ("n_too_large", "/v1/chat/completions", {**CHAT, "n": 1000}, 400),
    ("n_with_stream", "/v1/chat/completions", {**CHAT, "n": 2, "stream": True}, 400),
    ("echo_unsupported", "/v1/completions", {"model": "native", "prompt": "x", "echo": True}, 400),
    ("fan_out", "/v1/completions", {"model": "majority_vote", "prompt": "", "method_params": {"sample_num": 999}}, 400),
    ("jobs_bad_sampling", "/v1/jobs", {"method": "native", "prompt": "x", "sampling": {"temperature": "hot"}}, 400),
    ("jobs_sampling_extra", "/v1/jobs", {"method": "native", "prompt": "x", "sampling": {"bogus": 1}}, 400),
    ("jobs_deep_metadata", "/v1/jobs", {"method": "native", "prompt": "x", "metadata": _deep(300)}, 400),
]


async def test_bad_input_gets_a_typed_4xx_never_a_500(make_stack):
    """Each case of issue 8 (one stack for all: they must not disturb each other either)."""
    wrong = []
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        for name, path, body, status in BAD_BODIES:
            try:
                _assert_openai_error(await http.post(path, json=body), status)
            except AssertionError as exc:
                wrong.append(f"{name}: {exc}")
        r = await http.post("/v1/completions", json={"model": "native", "prompt": "still fine"})
        assert r.status_code == 200
    assert not wrong, wrong


async def test_raw_bodies_deep_json_and_oversize_get_400_or_413(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        deep = ('{"model":"native","prompt":"x","method_params":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}").encode()
        _assert_openai_error(await http.post("/v1/completions", content=deep), 400)
        deep_list = ("[" * 100000 + "]" * 100000).encode()
        _assert_openai_error(await http.post("/v1/completions", content=deep_list), 400)
        # Under the body limit but, as a job with its envelope, over NATS' max_payload.
        r = await http.post("/v1/completions", json={"model": "native", "prompt": "x" * ((1 << 20) - 60)})
        assert _assert_openai_error(r, 413)["code"] == "payload_too_large"
        for size in (2 << 20, 10_000_000):
            big = json.dumps({"model": "native", "prompt": "x" * size}).encode()
            error = _assert_openai_error(await http.post("/v1/completions", content=big), 413)
            assert error["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(3):
                yield b" " * (1 << 20)

        _assert_openai_error(await http.post("/v1/completions", content=chunks()), 413)
        for path in ("/v1/jobs/*/events", "/v1/jobs/a.b/events", "/v1/jobs/a.b", "/v1/jobs/>"):
            assert (await http.get(path)).status_code == 400
        assert (await http.delete("/v1/jobs/*")).status_code == 400
        assert (await http.post("/v1/completions", json={"model": "native", "prompt": "ok"})).status_code == 200


class BigReplyWorker(Worker):
    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        task.output_str = "x" * (2 << 20)


async def test_a_reply_over_max_payload_fails_the_task_typed(make_stack, nats_server, prefix):
    async with (
        make_stack({"generation": BigReplyWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        error = _assert_openai_error(await http.post("/v1/completions", json={"model": "native", "prompt": "x"}), 413)
        assert error["code"] == "payload_too_large" and "max_payload" in error["message"]
        nc = await nats.connect(nats_server.url)
        try:
            reply = await nc.request("$SRV.STATS.scaffolding-worker", b"", timeout=2)
        finally:
            await nc.close()
        stats = json.loads(reply.data)
        assert sum(e["num_errors"] for e in stats["endpoints"]) >= 1, "$SRV stats count the failed task"


async def test_n_gives_n_choices_and_models_by_id(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
    ):
        reply = await client.chat.completions.create(
            model="native", messages=[{"role": "user", "content": "a b c"}], n=3
        )
        assert [c.index for c in reply.choices] == [0, 1, 2]
        texts = {c.message.content for c in reply.choices}
        assert len(texts) == 1 and all(texts), "three runs of a deterministic backend"
        assert reply.usage is not None and reply.usage.completion_tokens > 0 and reply.usage.completion_tokens % 3 == 0
        assert len(reply.model_extra["scaffolding"]["choices"]) == 3  # type: ignore[index]
        model = await client.models.retrieve("majority_vote")
        assert model.id == "majority_vote"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("teleport")
        stream = await client.chat.completions.create(
            model="native",
            messages=[{"role": "user", "content": "a b"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None


class ToolCallingChat(Worker):
    """A chat backend that asks for the calculator, as a model would."""

    @handles(ChatTask)
    async def chat(self, task: ChatTask) -> None:
        assert task.tools and task.tools[0].name == "add"
        call = ToolCall(id="call_1", name="add", arguments='{"a": 1, "b": 2}')
        task.output_message = ChatMessage(role="assistant", content=None, tool_calls=[call])
        task.output_str = ""
        task.finish_reason = "tool_calls"
        task.usage = Usage(prompt_tokens=3, completion_tokens=5)


async def test_chat_with_client_tools_returns_tool_calls(make_stack):
    tools = [
        {
            "type": "function",
            "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}},
        }
    ]
    async with (
        make_stack({"generation": ToolCallingChat()}) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
    ):
        reply = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "1+2?"}], tools=tools  # type: ignore[arg-type]
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        call = choice.message.tool_calls[0]
        assert call.id == "call_1" and call.function.name == "add"
        assert json.loads(call.function.arguments) == {"a": 1, "b": 2}
        # the client runs the tool and sends the conversation back in OpenAI's shape
        follow = [
            {"role": "user", "content": "1+2?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        ]
        again = await client.chat.completions.create(model="chat", messages=follow, tools=tools)  # type: ignore[arg-type]
        assert again.choices[0].finish_reason == "tool_calls"
