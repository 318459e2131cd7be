"""Failing backends give typed, bounded errors: a stub HTTP server and a dead port, no model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from scaffolding_nats.devstack import free_port
from scaffolding_nats.proto.errors import ErrorCode
from scaffolding_nats.proto.tasks import ChatMessage, ChatTask, GenerationTask, RewardTask, TaskStatus
from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker


class StubServer:
    """Answers every request with one fixed HTTP status and counts the requests."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        await reader.readexactly(length)
        self.requests += 1
        body = json.dumps({"error": {"message": f"stub {self.status}", "type": "stub"}}).encode()
        writer.write(
            f"HTTP/1.1 {self.status} Stub\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 0\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def stub(request: pytest.FixtureRequest) -> AsyncIterator[StubServer]:
    stub = StubServer(request.param)
    stub.server = await asyncio.start_server(stub._handle, "127.0.0.1", 0)
    try:
        yield stub
    finally:
        stub.server.close()
        await stub.server.wait_closed()


async def test_a_dead_backend_is_a_retryable_backend_error_not_a_hang() -> None:
    worker = OpenAIWorker(f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=2)
    task = GenerationTask(input_str="hi", max_tokens=2)
    started = time.perf_counter()
    assert await asyncio.wait_for(worker.run_task(task), 20) is TaskStatus.WORKER_ERROR
    elapsed = time.perf_counter() - started
    assert task.error is not None
    assert task.error.code is ErrorCode.BACKEND_ERROR
    assert task.error.retryable is True
    assert task.error.details["attempts"] == 3
    assert 0.5 < elapsed < 15, "two retries with backoff, then give up"
    await worker.stop()


async def test_model_discovery_on_a_dead_backend_is_typed_too() -> None:
    worker = OpenAIWorker(f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    task = ChatTask(messages=[ChatMessage(role="user", content="hi")])
    await worker.run_task(task)
    assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR


@pytest.mark.parametrize("stub", [503, 429], indirect=True)
async def test_overload_is_retried_a_bounded_number_of_times(stub: StubServer) -> None:
    worker = OpenAIWorker(stub.base_url, model="m", max_retries=2)
    task = GenerationTask(input_str="hi", max_tokens=2)
    await asyncio.wait_for(worker.run_task(task), 20)
    assert stub.requests == 3
    assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR
    assert task.error.retryable is True
    assert task.error.details["status_code"] == stub.status
    await worker.stop()


@pytest.mark.parametrize("stub", [400], indirect=True)
async def test_a_bad_request_is_not_retried(stub: StubServer) -> None:
    worker = OpenAIWorker(stub.base_url, model="m", max_retries=2)
    task = GenerationTask(input_str="hi", max_tokens=2)
    await worker.run_task(task)
    assert stub.requests == 1
    assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR
    assert task.error.retryable is False
    await worker.stop()


@pytest.mark.parametrize("stub", [500], indirect=True)
async def test_judge_failures_are_typed(stub: StubServer) -> None:
    worker = LogprobJudgeRewardWorker(stub.base_url, model="m", max_retries=0)
    task = RewardTask(prompt="1+1?", candidates=["2", "3"])
    assert await worker.run_task(task) is TaskStatus.WORKER_ERROR
    assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR
    assert task.scores is None
    await worker.stop()


async def test_a_stream_cut_short_without_finish_reason_is_a_typed_failure() -> None:
    """llama.cpp's server ends a stream with [DONE] when another request waits (unless told
    not to): a one-token "success" would silently truncate every concurrent sample."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next((int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")), 0)
        await reader.readexactly(length)
        chunk = {
            "id": "x", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": "1", "logprobs": None, "finish_reason": None}],
        }  # fmt: skip
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = OpenAIWorker(f"http://127.0.0.1:{port}/v1", model="m", max_retries=0)
    try:
        task = GenerationTask(input_str="hi", max_tokens=8)
        assert await asyncio.wait_for(worker.run_task(task), 10) is TaskStatus.WORKER_ERROR
        assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR
        assert task.error.retryable is True and "finish_reason" in task.error.message
    finally:
        await worker.stop()
        server.close()
        await server.wait_closed()


class BodyServer:
    """Answers every request with HTTP 200 and a fixed body: a broken or impostor server."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body, self.content_type = body, content_type

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next((int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")), 0)
        await reader.readexactly(length)
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
            + self.body
        )
        await writer.drain()
        writer.close()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe\x00 not utf-8", "application/json"),
        (b"<html>502 Bad Gateway</html>", "application/json"),
        (b"<html>proxy login</html>", "text/html"),
        (b'{"unexpected": true}', "application/json"),
        (b"data: {broken\n\n", "text/event-stream"),
    ],
    ids=["not-utf8", "not-json", "html", "other-json", "bad-sse"],
)
@pytest.mark.parametrize("stream_plain", [True, False], ids=["streamed", "plain"])
async def test_a_200_whose_body_is_not_a_response_is_a_retryable_backend_error(
    body: bytes, content_type: str, stream_plain: bool
) -> None:
    stub = BodyServer(body, content_type)
    server = await asyncio.start_server(stub.handle, "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    worker = OpenAIWorker(base_url, model="m", max_retries=0, stream_plain=stream_plain)
    discovering = OpenAIWorker(base_url, max_retries=0)
    judge = LogprobJudgeRewardWorker(base_url, model="m", max_retries=0)
    try:
        tasks = [
            (worker, GenerationTask(input_str="hi", max_tokens=2)),
            (worker, ChatTask(messages=[ChatMessage(role="user", content="hi")])),
            (discovering, GenerationTask(input_str="hi", max_tokens=2)),  # GET /models first
            (judge, RewardTask(prompt="1+1?", candidates=["2"])),
        ]
        for runner, task in tasks:
            assert await asyncio.wait_for(runner.run_task(task), 10) is TaskStatus.WORKER_ERROR
            assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR, (task, task.error)
            assert task.error.retryable is True and "answered with" in task.error.message
    finally:
        for w in (worker, discovering, judge):
            await w.stop()
        server.close()
        await server.wait_closed()
