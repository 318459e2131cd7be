"""Gateway API keys: 401 without one, tenants see only their own jobs, per-key limits -> 429."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.services.gateway.auth import KeyFileError, KeyStore, new_key
from scaffolding_nats.transport.jetstream import provision
from scaffolding_nats.workers.synthetic import SyntheticWorker

ALICE, BOB, SLOW, BUSY = new_key(), new_key(), new_key(), new_key()


def keys() -> KeyStore:
    return KeyStore.parse(
        f"""
        # tenant key [limits]
        alice {ALICE}
        bob   sha256:{__import__("hashlib").sha256(BOB.encode()).hexdigest()}
        slow  {SLOW} rpm=2
        busy  {BUSY} concurrency=1
        """
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_requests_without_a_valid_key_get_401_in_openai_shape(make_stack):
    async with make_stack({"generation": SyntheticWorker()}, keys=keys()) as s, httpx.AsyncClient(base_url=s.url) as h:
        for headers in ({}, auth("sk-wrong"), {"X-API-Key": "nope"}, {"Authorization": ALICE}):
            r = await h.post("/v1/completions", json={"model": "native", "prompt": "x"}, headers=headers)
            assert r.status_code == 401, headers
            assert r.json() == {
                "error": {
                    "message": "Incorrect or missing API key.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        assert (await h.get("/v1/models", headers={"X-API-Key": ALICE})).status_code == 200
        assert (await h.get("/healthz")).status_code == 200 and (await h.get("/readyz")).status_code == 200
        async with openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="sk-wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()


async def test_a_tenant_reads_and_cancels_only_its_own_jobs(make_stack):
    async with make_stack({"generation": SyntheticWorker()}, keys=keys()) as s, httpx.AsyncClient(base_url=s.url) as h:
        r = await h.post("/v1/jobs", json={"method": "native", "prompt": "a b"}, headers=auth(ALICE))
        job_id = r.json()["id"]
        events = []
        async with h.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth(ALICE)) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["type"] == "result"
        mine = await h.get(f"/v1/jobs/{job_id}", headers=auth(ALICE))
        assert mine.status_code == 200 and mine.json()["state"] == "succeeded" and "owner" not in mine.json()
        theirs = await h.get(f"/v1/jobs/{job_id}", headers=auth(BOB))
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "job_not_found"
        assert (await h.delete(f"/v1/jobs/{job_id}", headers=auth(BOB))).status_code == 404
        assert (await h.get(f"/v1/jobs/{job_id}/events", headers=auth(BOB))).status_code == 404
        still = await h.get(f"/v1/jobs/{job_id}", headers=auth(ALICE))
        assert still.json()["state"] == "succeeded"  # Bob's cancel reached nothing


async def _events(h: httpx.AsyncClient, job_id: str, key: str) -> list[dict]:
    events = []
    async with h.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth(key)) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


async def test_a_job_id_is_an_idempotency_key_of_its_tenant_only(make_stack):
    """Bob posting a predictable id first neither stops Alice's job of that id nor shows her his;
    Alice posting hers again gets her job (once more with the same body, 409 with another)."""
    worker = SyntheticWorker()
    async with make_stack({"generation": worker}, keys=keys()) as s, httpx.AsyncClient(base_url=s.url) as h:
        squat = {"method": "native", "prompt": "bob was here", "id": "predictable-job-0001"}
        mine = {"method": "native", "prompt": "alice asked this", "id": "predictable-job-0001"}
        r = await h.post("/v1/jobs", json=squat, headers=auth(BOB))
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
        r = await h.post("/v1/jobs", json=mine, headers=auth(ALICE))
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
        assert r.json()["id"] == "predictable-job-0001"
        events = await _events(h, "predictable-job-0001", ALICE)
        assert events[-1]["type"] == "result" and events[-1]["result"]["text"] == "this asked alice"
        assert (await _events(h, "predictable-job-0001", BOB))[-1]["result"]["text"] == "here was bob"
        status = await h.get("/v1/jobs/predictable-job-0001", headers=auth(ALICE))
        assert status.status_code == 200 and status.json()["result"]["text"] == "this asked alice"
        assert worker.started == 2
        # The same post again (a retry) is the same job: not run twice.
        again = await h.post("/v1/jobs", json=mine, headers=auth(ALICE))
        assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == r.json()
        # Another body under the same id is a conflict.
        other = await h.post("/v1/jobs", json={**mine, "prompt": "something else"}, headers=auth(ALICE))
        assert other.status_code == 409 and other.json()["error"]["code"] == "job_id_conflict"
        assert worker.started == 2
        assert (await h.get("/v1/jobs/never-posted", headers=auth(ALICE))).status_code == 404
        assert (await h.delete("/v1/jobs/never-posted", headers=auth(ALICE))).status_code == 404


async def test_a_posted_job_is_queued_until_a_controller_takes_it_and_a_cancel_stops_it_there(make_stack):
    worker = SyntheticWorker()
    async with (
        make_stack({"generation": worker}, keys=keys(), controller=False) as s,
        httpx.AsyncClient(base_url=s.url) as h,
    ):
        await provision(s.nc.jetstream(), s.subjects)  # what `admin init` does before any controller runs
        r = await h.post("/v1/jobs", json={"method": "native", "prompt": "a b", "id": "waits"}, headers=auth(ALICE))
        assert r.status_code == 202
        queued = await h.get("/v1/jobs/waits", headers=auth(ALICE))
        assert queued.status_code == 200 and queued.json()["state"] == "queued" and "digest" not in queued.json()
        assert (await h.delete("/v1/jobs/waits", headers=auth(ALICE))).status_code == 202
        async with ControllerService(s.nc, load_registry(), subjects=s.subjects):
            events = await _events(h, "waits", ALICE)
        assert [e["type"] for e in events] == ["error"] and events[0]["error"]["code"] == "cancelled"
        done = await h.get("/v1/jobs/waits", headers=auth(ALICE))
        assert done.json()["state"] == "failed" and done.json()["error"]["code"] == "cancelled"
        assert worker.started == 0


async def test_rate_limit_and_concurrency_cap_answer_429(make_stack):
    worker = SyntheticWorker(latency_s=1.0)
    async with make_stack({"generation": worker}, keys=keys()) as s, httpx.AsyncClient(base_url=s.url) as h:
        codes = [(await h.get("/v1/models", headers=auth(SLOW))).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await h.get("/v1/models", headers=auth(SLOW))
        assert limited.json()["error"]["code"] == "rate_limit_exceeded" and "retry-after" in limited.headers

        async def slow_request() -> int:
            r = await h.post("/v1/completions", json={"model": "native", "prompt": "x y"}, headers=auth(BUSY))
            return r.status_code

        first = asyncio.create_task(slow_request())
        for _ in range(250):  # until the first request holds the only slot (5 s at most)
            if worker.started:
                break
            await asyncio.sleep(0.02)
        second = await h.post("/v1/completions", json={"model": "native", "prompt": "x"}, headers=auth(BUSY))
        assert second.status_code == 429 and second.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert await first == 200
        assert (await h.get("/v1/models", headers=auth(BUSY))).status_code == 200  # the slot is free again


def test_key_file_errors_name_the_line():
    with pytest.raises(KeyFileError, match=r"keys:2: tenant 'a.b' is not a valid subject token"):
        KeyStore.parse("ok k1\na.b k2", source="keys")
    with pytest.raises(KeyFileError, match="unknown option 'burst'"):
        KeyStore.parse("t k burst=3")


async def test_readyz_goes_false_when_the_controllers_consumer_is_deleted(make_stack):
    async with make_stack({"generation": SyntheticWorker()}) as s, httpx.AsyncClient(base_url=s.url) as h:
        assert (await h.get("/readyz")).status_code == 200
        await s.nc.jetstream().delete_consumer(s.subjects.jobs_stream, s.subjects.jobs_consumer)
        for _ in range(150):  # the controller checks every 2 s; the gateway caches methods 5 s
            ready = await h.get("/readyz")
            if ready.status_code == 503:
                break
            await asyncio.sleep(0.1)
        assert ready.status_code == 503 and ready.json()["controllers"] is False
        assert "jobs consumer" in ready.json()["reason"] and "services.admin init" in ready.json()["reason"]
