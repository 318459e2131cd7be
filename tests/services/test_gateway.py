"""The gateway over a real stack (synthetic backend): OpenAI compatibility, jobs API, errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker


async def test_openai_client_chat_and_streamed_chat(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker(token_latency_s=0.001)}) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
    ):
        reply = await client.chat.completions.create(
            model="native", messages=[{"role": "user", "content": "alpha beta"}], max_tokens=50
        )
        assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens > 0
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="stream",
                messages=[{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}],
                stream=True,
            )
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # real deltas
        assert "w39" in text and chunks[-1].choices[0].finish_reason == "stop"
        models = await client.models.list()
        assert {"native", "majority_vote", "best_of_n", "dynasor"} <= {m.id for m in models.data}


async def test_completions_and_multi_path_usage_counts_every_task(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=s.key) as client,
    ):
        reply = await client.completions.create(
            model="majority_vote", prompt="x 5 y", extra_body={"method_params": {"sample_num": 4}}
        )
        assert reply.choices[0].text == "y 5 x"
        assert reply.usage is not None and reply.usage.completion_tokens == 12  # 4 samples x 3 tokens
        ext = reply.model_extra["scaffolding"]  # type: ignore[index]
        assert ext["answer"] == "5" and ext["num_tasks"] == 4
        stream = await client.completions.create(
            model="majority_vote",
            prompt="x 5 y",
            stream=True,
            extra_body={"method_params": {"sample_num": 2}},
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "y 5 x"


async def test_bad_requests_get_openai_style_errors(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        r = await http.post("/v1/chat/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await http.post("/v1/chat/completions", json={"model": "native", "messages": "hi"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = await http.post(
            "/v1/chat/completions", json={"model": "teleport", "messages": [{"role": "user", "content": "x"}]}
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await http.post(
            "/v1/completions",
            json={"model": "majority_vote", "prompt": "x", "method_params": {"sample_num": "lots"}},
        )
        assert r.status_code == 400 and "sample_num" in r.json()["error"]["message"]
        r = await http.post("/v1/completions", json={"model": "native", "prompt": "still fine"})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "fine still"


async def test_no_controller_and_no_worker_give_503_saying_which(make_stack):
    async with make_stack({}, controller=False) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers) as http:
        r = await http.post("/v1/completions", json={"model": "native", "prompt": "x"})
        assert r.status_code == 503 and "controller" in r.json()["error"]["message"]
        assert (await http.get("/readyz")).status_code == 503
    async with make_stack({}) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as http:
        r = await http.post("/v1/completions", json={"model": "native", "prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker"
        assert "generation" in r.json()["error"]["message"]
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["controllers"] is True


async def test_jobs_api_submit_status_events_and_cancel(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        r = await http.post(
            "/v1/jobs", json={"method": "majority_vote", "prompt": "a 1 b", "params": {"sample_num": 2}}
        )
        assert r.status_code == 202
        job_id = r.json()["id"]
        events = []
        async with http.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[0]["type"] == "accepted" and events[-1]["type"] == "result"
        record = (await http.get(f"/v1/jobs/{job_id}")).json()
        assert record["state"] == "succeeded" and record["result"]["text"] == "b 1 a"
        assert (await http.get("/v1/jobs/nope")).status_code == 404
        r = await http.post("/v1/jobs", json={"method": "bad method!"})
        assert r.status_code == 400


async def test_client_disconnect_mid_stream_cancels_the_job(make_stack):
    worker = SyntheticWorker(token_latency_s=0.05)
    async with make_stack({"generation": worker}) as s, httpx.AsyncClient(base_url=s.url, headers=s.headers) as http:
        words = " ".join(f"w{i}" for i in range(400))
        async with http.stream(
            "POST", "/v1/completions", json={"model": "stream", "prompt": words, "stream": True}
        ) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and '"text":"w' in line:
                    break  # got a token: now walk away
        for _ in range(100):
            if worker.cancelled:
                break
            await asyncio.sleep(0.05)
        assert worker.cancelled == 1 and worker.finished == 0


async def test_health_metrics_and_openapi(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        await http.post("/v1/completions", json={"model": "native", "prompt": "m"})
        metrics_text = (await http.get("/metrics")).text
        assert "scaffolding_gateway_requests_total" in metrics_text
        spec = (await http.get("/openapi.json")).json()
        assert "/v1/chat/completions" in spec["paths"] and "/v1/jobs" in spec["paths"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_sampling_fields_reach_the_tasks(make_stack, path):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        body = {"model": "native", "max_tokens": 2}
        body |= {"messages": [{"role": "user", "content": "a b c d"}]} if "chat" in path else {"prompt": "a b c d"}
        r = await http.post(path, json=body)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


async def _sse_chunks(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> list[dict[str, object]]:
    chunks = []
    async with http.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_include_usage_sends_usage_once_on_the_last_chunk_as_openai_does(make_stack, path):
    """A client that adds up every chunk's usage must count each token once: with
    ``include_usage`` only the last chunk (no choices) carries it, every other ``"usage": null``."""
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as http,
    ):
        words = " ".join(f"w{i}" for i in range(30))
        body: dict[str, object] = {"model": "stream", "stream": True, "stream_options": {"include_usage": True}}
        body |= {"messages": [{"role": "user", "content": words}]} if "chat" in path else {"prompt": words}
        chunks = await _sse_chunks(http, path, body)
        carrying = [c for c in chunks if c.get("usage") is not None]
        assert len(carrying) == 1 and carrying[0] is chunks[-1] and chunks[-1]["choices"] == []
        usage = carrying[0]["usage"]
        assert isinstance(usage, dict) and usage["completion_tokens"] >= 30
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
        finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]  # type: ignore[index]
        assert len(finish) == 1 and "scaffolding" in finish[0]

        del body["stream_options"]  # without it: usage once, on the finish chunk (as before)
        chunks = await _sse_chunks(http, path, body)
        assert [c for c in chunks if c.get("usage")] == [chunks[-1]] and chunks[-1]["choices"]


async def test_an_unknown_backend_model_is_a_404_and_every_replicas_models_count(make_stack):
    """``method/model`` must name a model some worker serves; two replicas of a tag serving
    different models both count, and ``GET /v1/models/{id}`` agrees with what a request gets."""
    async with (
        make_stack({"generation": SyntheticWorker(model="alpha")}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers) as http,
    ):
        r = await http.post("/v1/completions", json={"model": "native/nonexistent-model", "prompt": "x y"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "nonexistent-model" in r.json()["error"]["message"]
        assert r.json()["error"]["details"]["available"] == ["alpha"]
        r = await http.post("/v1/completions", json={"model": "native/alpha", "prompt": "x y"})
        assert r.status_code == 200 and r.json()["model"] == "native/alpha" and r.json()["choices"][0]["text"] == "y x"
        assert (await http.get("/v1/models/native/alpha")).status_code == 200
        r = await http.get("/v1/models/native/nonexistent-model")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert (await http.get("/v1/models/teleport/alpha")).status_code == 404

        replica = SyntheticWorker(model="beta")  # a second replica of the tag joins, serving another model
        async with WorkerHost(s.nc, replica, tags=["generation"], subjects=s.subjects, name="second"):
            for _ in range(40):  # a miss asks the workers again, at most once a second
                r = await http.post("/v1/completions", json={"model": "native/beta", "prompt": "x y"})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200, r.text
            assert (await http.get("/v1/models/native/alpha")).status_code == 200
            r = await http.post("/v1/completions", json={"model": "native/gamma", "prompt": "x"})
            assert r.status_code == 404 and r.json()["error"]["details"]["available"] == ["alpha", "beta"]
