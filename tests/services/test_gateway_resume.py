"""The gateway's SSE endpoint resumes after the ``Last-Event-ID`` an EventSource sends back."""

from __future__ import annotations

import json

import httpx

from scaffolding_nats.workers.synthetic import SyntheticWorker


async def _sse(http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> list[dict]:
    events = []
    async with http.stream("GET", url, headers=headers or {}) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


async def test_sse_resumes_after_last_event_id(make_stack):
    async with (
        make_stack({"generation": SyntheticWorker()}) as s,
        httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=30) as http,
    ):
        r = await http.post(
            "/v1/jobs", json={"method": "majority_vote", "prompt": "a 1 b", "params": {"sample_num": 2}}
        )
        url = f"/v1/jobs/{r.json()['id']}/events"
        everything = await _sse(http, url)
        assert [e["seq"] for e in everything] == list(range(len(everything))) and len(everything) >= 3
        rest = await _sse(http, url, {"Last-Event-ID": "0"})
        assert rest == everything[1:]
