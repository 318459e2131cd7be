"""The official openai client against the gateway, answered by the real packaged CPU model."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from scaffolding_nats.devstack import ModelServer
from scaffolding_nats.workers.judge_reward_worker import LogprobJudgeRewardWorker
from scaffolding_nats.workers.openai_worker import OpenAIWorker

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer("smollm2") as server:
        yield server


async def test_chat_and_streamed_chat_from_the_real_model(make_stack, model):
    workers = {
        "generation": OpenAIWorker(model.base_url, model=model.model),
        "reward": LogprobJudgeRewardWorker(model.base_url, model=model.model),
    }
    async with (
        make_stack(workers) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
    ):
        reply = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Say hello in three words."}],
            max_tokens=16,
            temperature=0,
            seed=1,
        )
        text = reply.choices[0].message.content
        assert text and text.strip()
        assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 16

        stream = await client.chat.completions.create(
            model="stream",
            messages=[{"role": "user", "content": "Count from one to ten in words."}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        chunks = [c async for c in stream]
        deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(deltas) > 1 and "".join(deltas).strip()
        assert chunks[-1].choices[0].finish_reason in {"stop", "length"}

        voted = await client.chat.completions.create(
            model="best_of_n",
            messages=[{"role": "user", "content": "What is 2 + 2?"}],
            max_tokens=24,
            extra_body={"method_params": {"sample_num": 2}},
        )
        ext = voted.model_extra["scaffolding"]  # type: ignore[index]
        assert set(ext["usage_by_controller"]) >= {"generation", "reward"}
        assert (
            voted.usage is not None
            and voted.usage.completion_tokens
            == ext["usage_by_controller"]["generation"]["completion_tokens"]
            + ext["usage_by_controller"]["reward"]["completion_tokens"]
        )


async def test_streamed_chat_gives_token_deltas_of_the_final_text_and_unknown_models_are_404(make_stack, model):
    """``chat`` with ``stream: true`` streams the model's turn as it is generated: several
    deltas whose concatenation is the job's final text. A backend model no worker serves is a
    404, the served one (the worker's, as llama-server lists it) is accepted."""
    async with (
        make_stack({"generation": OpenAIWorker(model.base_url, model=model.model)}) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
        httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as http,
    ):
        stream = await client.chat.completions.create(
            model=f"chat/{model.model}",
            messages=[{"role": "user", "content": "Count from one to ten in words."}],
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(deltas) > 2, deltas
        record = (await http.get(f"/v1/jobs/{chunks[0].id.removeprefix('chatcmpl-')}")).json()
        assert "".join(deltas) == record["result"]["text"] and record["result"]["num_tasks"] == 1
        usages = [c.usage for c in chunks if c.usage is not None]
        assert len(usages) == 1 and usages[0].completion_tokens == record["result"]["usage"]["completion_tokens"]

        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(
                model="chat/nonexistent-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        assert missing.value.code == "model_not_found"
        assert (await client.models.retrieve(f"chat/{model.model}")).id == f"chat/{model.model}"
        assert (await http.get("/v1/models/chat/nonexistent-model")).status_code == 404
