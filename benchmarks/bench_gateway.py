"""P4: the same chat load through the gateway (method ``chat``: gateway -> NATS -> controller
-> NATS -> OpenAI worker -> model) versus straight to the model server, at the same
concurrency, in one run with rounds interleaved. Prints the throughput ratio and the added
latency per request. All services run as separate local processes, as in ``make run``.

Run: ``python -m benchmarks.bench_gateway`` (``--requests``, ``--concurrency``, ``--rounds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from scaffolding_nats.devstack import ModelServer, NatsServer, free_port
from scaffolding_nats.devstack.procs import ServiceProcs
from scaffolding_nats.devstack.run import _wait_ready
from scaffolding_nats.services.gateway.auth import new_key


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> int:
    """One request, retried once where the server closed a pooled connection before answering.

    llama-server (cpp-httplib) sometimes closes a kept-alive connection right after a streamed
    response; the next request on it gets no answer at all. The worker's OpenAI client retries
    such a request itself, so the direct path does the same to be compared fairly."""
    try:
        return await _post_once(client, url, body)
    except httpx.RemoteProtocolError:
        return await _post_once(client, url, body)


async def _post_once(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> int:
    """One request; the completion tokens it reports (for a stream: the content chunks)."""
    if not body.get("stream"):
        r = await client.post(url, json=body)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {") and ('"content": "' in line or '"content":"' in line):
                tokens += 1
    return tokens


async def _load(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int,
    stream: bool = False,
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    tokens = 0
    todo = list(range(requests))

    async def lane() -> None:
        nonlocal tokens
        while todo:
            i = todo.pop()
            body = {
                "model": model,
                "max_tokens": max_tokens,
                "temperature": 0,
                "seed": i,
                "stream": stream,
                "messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}],
            }
            t = time.perf_counter()
            got = await _post(client, url, body)  # not `tokens += await ...`: that reads tokens first
            latencies.append(time.perf_counter() - t)
            tokens += got

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start), latencies, tokens


async def measure(direct: str, gateway: str, model: str, args: argparse.Namespace) -> None:
    paths = (
        ("direct", direct, model, False),
        ("direct-stream", direct, model, True),
        ("gateway", gateway, "chat", False),
    )
    rates: dict[str, list[float]] = {p[0]: [] for p in paths}
    lats: dict[str, list[float]] = {p[0]: [] for p in paths}
    toks: dict[str, int] = {p[0]: 0 for p in paths}
    headers = {"Authorization": f"Bearer {args.api_key}"}  # the model server ignores it
    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        await _load(client, direct, model, requests=args.concurrency, concurrency=args.concurrency, max_tokens=8)
        await _load(client, gateway, "chat", requests=args.concurrency, concurrency=args.concurrency, max_tokens=8)
        for _ in range(args.rounds):
            for name, url, m, stream in paths:
                rate, lat, tok = await _load(
                    client,
                    url,
                    m,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    max_tokens=args.max_tokens,
                    stream=stream,
                )
                rates[name].append(rate)
                lats[name] += lat
                toks[name] += tok
    d_rate, g_rate = statistics.median(rates["direct"]), statistics.median(rates["gateway"])
    d_p50, g_p50 = statistics.median(lats["direct"]), statistics.median(lats["gateway"])
    print(
        f"\nP4  chat requests, {args.requests} per round x {args.rounds} rounds, concurrency {args.concurrency}, "
        f"max_tokens {args.max_tokens}, model {model}"
    )
    print(f"    {'path':<36}{'req/s':>8}{'p50 s':>8}{'tokens':>8}")
    print(f"    {'straight to the model server':<36}{d_rate:>8.2f}{d_p50:>8.3f}{toks['direct']:>8}")
    s_rate, s_p50 = statistics.median(rates["direct-stream"]), statistics.median(lats["direct-stream"])
    print(f"    {'  same, streamed (as the worker asks)':<36}{s_rate:>8.2f}{s_p50:>8.3f}{toks['direct-stream']:>8}")
    print(f"    {'through gateway + NATS + controller':<36}{g_rate:>8.2f}{g_p50:>8.3f}{toks['gateway']:>8}")
    print(
        f"    throughput ratio gateway/direct = {g_rate / d_rate:.3f}x (goal >= 0.95x); "
        f"added latency per request (p50) = {(g_p50 - d_p50) * 1000:+.1f} ms"
    )
    print(
        "    against the streamed direct path (the worker streams, to measure time to first token): "
        f"{g_rate / s_rate:.3f}x, {(g_p50 - s_p50) * 1000:+.1f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--model", default="smollm2")
    args = p.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        nats = stack.enter_context(NatsServer())
        model = stack.enter_context(ModelServer(args.model))
        args.api_key = new_key()
        backend = json.dumps({"base_url": model.base_url, "model": model.model, "max_concurrency": args.concurrency})
        logs = Path(tmp)
        port = free_port()
        # One login (no auth on this server), so the controller provisions the streams.
        extra = {"SCAF_PROVISION": "1", "SCAF_API_KEYS": f"bench {args.api_key}", "SCAF_LOG_LEVEL": "WARNING"}
        procs = stack.enter_context(ServiceProcs(logs, "p4", extra))
        worker = ["scaffolding_nats.services.worker", "--worker", "openai", "--tags", "generation"]
        procs.start("worker", [*worker, "--worker-args", backend], nats, "admin")
        procs.start("controller", ["scaffolding_nats.services.controller"], nats, "admin")
        procs.start("gateway", ["scaffolding_nats.services.gateway", "--port", str(port)], nats, "admin")
        services = procs.started
        for s in services[:2]:
            s.wait_ready(60)
        _wait_ready(f"http://127.0.0.1:{port}", 60)
        try:
            asyncio.run(
                measure(
                    f"{model.base_url}/chat/completions",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    model.model,
                    args,
                )
            )
        except Exception:
            for s in services:  # say which part failed, not just that a connection closed
                print(f"--- {s.name} log:\n{(logs / f'{s.name}.log').read_text(errors='replace')[-3000:]}")
            raise


if __name__ == "__main__":
    main()
