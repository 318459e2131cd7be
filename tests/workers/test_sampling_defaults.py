"""Per-model sampling defaults: set once in the model table (``devstack.model_files``), sent by
the worker in every request a method leaves them unset in, and overridden by what a task (a
method, a job) sets. The requests are captured at the HTTP layer, as llama-server gets them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from scaffolding_nats.devstack import ModelServer
from scaffolding_nats.devstack.model_files import ALIASES, QWEN_SAMPLING, sampling_defaults
from scaffolding_nats.proto.tasks import ChatMessage, ChatTask, GenerationTask, StreamingGenerationTask, TaskStatus
from scaffolding_nats.workers import OpenAIWorker
from scaffolding_nats.workers.openai_worker import check_sampling

QWEN = ALIASES["qwen-0.5b"]


def capturing_worker(sent: list[dict[str, Any]], **kw: Any) -> OpenAIWorker:
    """A worker whose HTTP requests are recorded and answered like llama-server would."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        if request.url.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
            return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0,
                                             "model": body["model"], "choices": [choice], "usage": usage})  # fmt: skip
        choice = {"index": 0, "text": "4", "finish_reason": "stop", "logprobs": None}
        return httpx.Response(200, json={"id": "c", "object": "text_completion", "created": 0,
                                         "model": body["model"], "choices": [choice], "usage": usage})  # fmt: skip

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    client = openai.AsyncOpenAI(base_url="http://model.test/v1", api_key="none", http_client=http)
    return OpenAIWorker("http://model.test/v1", model=kw.pop("model", QWEN), client=client, stream_plain=False, **kw)


def test_one_table_of_model_defaults() -> None:
    assert sampling_defaults("qwen-0.5b") == sampling_defaults(QWEN) == QWEN_SAMPLING
    assert sampling_defaults("qwen-1.5b") == QWEN_SAMPLING
    assert sampling_defaults("smollm2") == {} and sampling_defaults(None) == {} and sampling_defaults("gpt-x") == {}
    assert QWEN_SAMPLING == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    assert ModelServer("qwen-0.5b").sampling_defaults == QWEN_SAMPLING
    with pytest.raises(ValueError):
        check_sampling({"top_kk": 3})


async def test_the_worker_sends_the_models_defaults() -> None:
    sent: list[dict[str, Any]] = []
    worker = capturing_worker(sent)
    assert await worker.run_task(GenerationTask(input_str="2+2=", max_tokens=4)) is TaskStatus.SUCCESS
    assert await worker.run_task(ChatTask(messages=[ChatMessage(role="user", content="2+2?")])) is TaskStatus.SUCCESS
    for body in sent:
        assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.8, 20)
        assert body["repeat_penalty"] == body["repetition_penalty"] == 1.05  # llama.cpp's name and vLLM's
        assert "min_p" not in body


async def test_what_a_task_sets_wins() -> None:
    sent: list[dict[str, Any]] = []
    worker = capturing_worker(sent)
    task = GenerationTask(input_str="2+2=", temperature=0.0, top_k=1, min_p=0.1, repetition_penalty=1.0)
    await worker.run_task(task)
    assert (sent[0]["temperature"], sent[0]["top_k"], sent[0]["min_p"], sent[0]["repeat_penalty"]) == (0.0, 1, 0.1, 1.0)
    assert sent[0]["top_p"] == 0.8  # left unset by the task: still the model's


async def test_explicit_defaults_and_none() -> None:
    sent: list[dict[str, Any]] = []
    await capturing_worker(sent, sampling_defaults={"min_p": 0.05}).run_task(GenerationTask(input_str="x"))
    await capturing_worker(sent, sampling_defaults={}).run_task(GenerationTask(input_str="x"))
    await capturing_worker(sent, model="smollm2-135m-instruct").run_task(GenerationTask(input_str="x"))
    assert sent[0]["min_p"] == 0.05 and "temperature" not in sent[0]
    assert not {"temperature", "top_k", "top_p", "repeat_penalty"} & set(sent[1]) & set(sent[2])


@pytest.mark.model
async def test_llama_server_takes_the_extra_fields(model_server: ModelServer) -> None:
    """The real engine accepts (and applies) top_k, min_p and repeat_penalty."""
    worker = OpenAIWorker(model_server.base_url, max_retries=0, timeout=30, sampling_defaults=QWEN_SAMPLING)
    await worker.start()
    try:
        for task in (
            GenerationTask(input_str="Once upon a time", max_tokens=6, seed=3, min_p=0.05),
            StreamingGenerationTask(input_str="Once upon a time", max_tokens=6, seed=3),
        ):
            async for _ in worker.stream_task(task):
                pass
            assert task.ok, task.error
            assert task.output_str and task.top_k == 20 and task.repetition_penalty == 1.05
    finally:
        await worker.stop()
