"""Real work on a real CPU model: SmolLM2-135M behind llama.cpp's OpenAI-compatible server.

llama.cpp serves one request at a time (~80-120 tokens/s here), so every test keeps
``max_tokens`` small.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest

from scaffolding_nats.devstack import ModelServer
from scaffolding_nats.proto.tasks import (
    ChatMessage,
    ChatTask,
    GenerationTask,
    RewardTask,
    StreamingChatTask,
    StreamingGenerationTask,
    TaskStatus,
)
from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker

pytestmark = pytest.mark.model


@pytest.fixture
async def worker(model_server: ModelServer) -> AsyncIterator[OpenAIWorker]:
    w = OpenAIWorker(model_server.base_url, max_retries=0, timeout=30)
    await w.start()
    yield w
    await w.stop()


async def test_generation_returns_text_usage_and_timing(worker: OpenAIWorker) -> None:
    task = GenerationTask(input_str="The capital of France is", max_tokens=8, temperature=0, num_logprobs=2)
    assert await worker.run_task(task) is TaskStatus.SUCCESS, task.error
    assert task.output_str
    assert task.finish_reason in ("length", "stop")
    assert task.usage is not None and 0 < task.usage.completion_tokens <= 8
    assert task.ttft_s is not None and task.latency_s is not None
    assert 0 < task.ttft_s <= task.latency_s < 10
    assert task.logprobs and task.logprobs[0].top and len(task.logprobs[0].top) >= 1
    assert all(lp.logprob <= 0 for lp in task.logprobs)


async def test_the_model_name_is_discovered(worker: OpenAIWorker, model_server: ModelServer) -> None:
    assert await worker.backend.resolve_model() == model_server.model


async def test_seed_and_zero_temperature_repeat(worker: OpenAIWorker) -> None:
    outputs = []
    for _ in range(2):
        task = GenerationTask(input_str="Once upon a time", max_tokens=10, temperature=0, seed=7)
        await worker.run_task(task)
        outputs.append(task.output_str)
    assert outputs[0] and outputs[0] == outputs[1]


async def test_n_samples_are_drawn_even_where_the_server_ignores_n(worker: OpenAIWorker) -> None:
    task = GenerationTask(input_str="A random word:", max_tokens=4, temperature=1.0, seed=1, n=2)
    assert await worker.run_task(task) is TaskStatus.SUCCESS, task.error
    assert task.choices is not None and len(task.choices) == 2
    assert task.output_str == task.choices[0].text
    assert task.usage is not None and task.usage.completion_tokens >= 2


async def test_streaming_yields_tokens_and_early_close_cancels(worker: OpenAIWorker) -> None:
    task = StreamingGenerationTask(input_str="Write a long story about a dragon:", max_tokens=1000)
    stream = cast(AsyncGenerator[int, None], worker.stream_task(task))
    seen = 0
    async for new_tokens in stream:
        assert new_tokens >= 0
        seen += new_tokens
        if seen >= 5:
            break
    await stream.aclose()
    assert worker.backend.in_flight == 0, "closing the stream released its request at once"
    assert seen >= 5 and task.output_str
    assert task.status is TaskStatus.CANCELLED
    assert task.ttft_s is not None
    # Had the server kept generating its 1000 tokens, this request would queue behind them.
    started = time.perf_counter()
    after = GenerationTask(input_str="Hi", max_tokens=3)
    assert await worker.run_task(after) is TaskStatus.SUCCESS, after.error
    assert time.perf_counter() - started < 3.0


async def test_streaming_to_the_end(worker: OpenAIWorker) -> None:
    task = StreamingGenerationTask(input_str="Count: 1, 2, 3,", max_tokens=6, temperature=0)
    chunks = [n async for n in worker.stream_task(task)]
    assert task.usage is not None and sum(chunks) == task.usage.completion_tokens
    assert task.end_flag and task.status is TaskStatus.SUCCESS
    assert task.finish_reason in ("length", "stop")


async def test_chat(worker: OpenAIWorker) -> None:
    task = ChatTask(
        messages=[
            ChatMessage(role="system", content="You are a helpful assistant."),
            ChatMessage(role="user", content="Say hello."),
        ],
        max_tokens=8,
        temperature=0,
        num_logprobs=2,
    )
    assert await worker.run_task(task) is TaskStatus.SUCCESS, task.error
    assert task.output_message is not None and task.output_message.role == "assistant"
    assert task.output_str and task.output_message.content == task.output_str
    assert task.usage is not None and task.usage.completion_tokens > 0
    assert task.ttft_s is not None and task.latency_s is not None
    assert task.logprobs


async def test_a_streamed_chat_grows_its_text_chunk_by_chunk(worker: OpenAIWorker) -> None:
    messages = [ChatMessage(role="user", content="Count to five.")]
    task = StreamingChatTask(messages=messages, max_tokens=12, temperature=0)
    texts = []
    async for new_tokens in worker.stream_task(task):
        assert new_tokens >= 0
        texts.append(task.output_str or "")
    assert task.status is TaskStatus.SUCCESS and task.end_flag, task.error
    assert len(set(texts)) > 2 and all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert task.output_message is not None and task.output_message.content == task.output_str == texts[-1]
    assert task.usage is not None and 0 < task.usage.completion_tokens <= 12


async def test_served_models_are_the_configured_and_the_listed_ones(model_server: ModelServer) -> None:
    named = OpenAIWorker(model_server.base_url, model="alias-of-mine", max_retries=0)
    assert await named.served_models() == ["alias-of-mine", model_server.model]
    await named.stop()


async def test_concurrent_tasks_share_the_backend(worker: OpenAIWorker) -> None:
    tasks = [GenerationTask(input_str=f"Number {i}:", max_tokens=3) for i in range(4)]
    statuses = await asyncio.gather(*(worker.run_task(t) for t in tasks))
    assert all(s is TaskStatus.SUCCESS for s in statuses)


async def test_judge_scores_two_candidates(model_server: ModelServer) -> None:
    judge = LogprobJudgeRewardWorker(model_server.base_url, model_server.model, max_concurrency=2)
    task = RewardTask(prompt="What is 2 + 3?", candidates=["2 + 3 = 5", "2 + 3 = 7"])
    assert await judge.run_task(task) is TaskStatus.SUCCESS, task.error
    assert task.scores is not None and len(task.scores) == 2
    assert all(0.0 <= s <= 1.0 for s in task.scores)
    assert task.usage is not None and task.usage.completion_tokens >= 2
    assert task.latency_s is not None
    await judge.stop()


async def test_judge_process_mode_scores_every_step(model_server: ModelServer) -> None:
    judge = LogprobJudgeRewardWorker(model_server.base_url, api="completions")
    task = RewardTask(
        mode="process",
        prompt="What is 2 + 3 * 4?",
        candidates=["3 * 4 = 12\n\n2 + 12 = 14", "2 + 3 = 5"],
    )
    assert await judge.run_task(task) is TaskStatus.SUCCESS, task.error
    assert task.step_scores is not None and [len(s) for s in task.step_scores] == [2, 1]
    assert task.scores == [min(s) for s in task.step_scores]
    assert all(0.0 <= s <= 1.0 for chain in task.step_scores for s in chain)
    await judge.stop()


async def test_unstreamed_requests_give_the_same_results(model_server: ModelServer) -> None:
    """``stream_plain=False``: one request, one response (no SSE), same text, usage and
    log-probs as the streamed path; only the time to first token is unknown."""
    plain = OpenAIWorker(model_server.base_url, max_retries=0, timeout=30, stream_plain=False)
    streamed = OpenAIWorker(model_server.base_url, max_retries=0, timeout=30)
    try:
        outs = []
        for w in (plain, streamed):
            task = GenerationTask(input_str="Count: 1, 2, 3,", max_tokens=6, temperature=0, seed=7, num_logprobs=1)
            assert await w.run_task(task) is TaskStatus.SUCCESS, task.error
            outs.append(task)
        assert outs[0].output_str == outs[1].output_str and outs[0].output_str
        assert outs[0].usage is not None and outs[1].usage is not None
        assert outs[0].usage.completion_tokens == outs[1].usage.completion_tokens
        assert outs[0].finish_reason == outs[1].finish_reason
        # The whole response carries the server's own token counts, not an estimate.
        assert not (outs[0].customized_result_fields or {}).get("usage_estimated")
        assert outs[0].logprobs and len(outs[0].logprobs) == len(outs[1].logprobs or [])
        assert outs[0].ttft_s is None and outs[0].latency_s is not None
        chat = ChatTask(messages=[ChatMessage(role="user", content="Say hello.")], max_tokens=8, temperature=0)
        assert await plain.run_task(chat) is TaskStatus.SUCCESS, chat.error
        assert chat.output_message is not None and chat.output_message.content == chat.output_str
        assert chat.output_str and chat.usage is not None and chat.usage.completion_tokens > 0
    finally:
        await plain.stop()
        await streamed.stop()
