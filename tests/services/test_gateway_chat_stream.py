"""A streamed ``chat`` through the whole stack, with a backend that calls tools: the official
openai client, the gateway, the controller and the real OpenAI worker, streaming from an
OpenAI-compatible HTTP server that answers in deltas and then asks for a tool (the packaged
CPU model's server never emits tool calls, see ``tests/e2e``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import openai
import pytest

from scaffolding_nats.workers.openai_worker import OpenAIWorker

WORDS = [f"w{i} " for i in range(24)]
CALL = {"id": "call_7", "name": "lookup", "arguments": '{"q": "weather"}'}


class ToolCallingServer:
    """``GET /v1/models`` and ``POST /v1/chat/completions``: a streamed answer of ``WORDS``,
    one SSE event per word, then (when tools are offered) a tool call split over two deltas."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        sizes = [int(h.split(":", 1)[1]) for h in head.split("\r\n") if h.lower().startswith("content-length:")]
        length = sizes[0] if sizes else 0
        body = json.loads(await reader.readexactly(length)) if length else {}
        if head.startswith("GET /v1/models"):
            data = json.dumps({"object": "list", "data": [{"id": "tool-model", "object": "model"}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(data), data))  # fmt: skip
        else:
            self.bodies.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for event in self._events(bool(body.get("tools"))):
                writer.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        writer.close()

    @staticmethod
    def _events(tools: bool) -> list[dict[str, object]]:
        def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {"id": "x", "object": "chat.completion.chunk", "model": "tool-model", "choices": [choice]}

        events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in WORDS]
        if tools:
            args = CALL["arguments"]
            head = {"index": 0, "id": CALL["id"], "type": "function"}
            first = {**head, "function": {"name": CALL["name"], "arguments": args[:5]}}
            rest = {"index": 0, "function": {"arguments": args[5:]}}
            events += [chunk({"tool_calls": [first]}), chunk({"tool_calls": [rest]})]
        events.append(chunk({}, "tool_calls" if tools else "stop"))
        return events

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture
async def backend() -> AsyncIterator[ToolCallingServer]:
    stub = ToolCallingServer()
    stub.server = await asyncio.start_server(stub._handle, "127.0.0.1", 0)
    try:
        yield stub
    finally:
        stub.server.close()
        await stub.server.wait_closed()


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


async def test_streamed_chat_sends_token_deltas_then_the_models_tool_calls(make_stack, backend):
    async with (
        make_stack({"generation": OpenAIWorker(backend.base_url, model="tool-model")}) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
    ):
        stream = await client.chat.completions.create(
            model="chat/tool-model",
            messages=[{"role": "user", "content": "What is the weather?"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
        chunks = [c async for c in stream]
        deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(deltas) > 2 and "".join(deltas) == "".join(WORDS)  # deltas, not one chunk at the end
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert [(tc.id, tc.function.name, tc.function.arguments) for tc in calls] == [  # type: ignore[union-attr]
            (CALL["id"], CALL["name"], CALL["arguments"])
        ]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert backend.bodies[-1]["stream"] is True and backend.bodies[-1]["tools"]

        reply = await client.chat.completions.create(  # the same turn unstreamed: one plain chat task
            model="chat", messages=[{"role": "user", "content": "What is the weather?"}], tools=TOOLS  # type: ignore[arg-type]
        )
        message = reply.choices[0].message
        assert message.content == "".join(WORDS) and reply.choices[0].finish_reason == "tool_calls"
        assert message.tool_calls and message.tool_calls[0].function.arguments == CALL["arguments"]  # type: ignore[union-attr]
