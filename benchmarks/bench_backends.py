"""The two CPU model servers side by side: tokens/s for one request, for ``--parallel``
concurrent requests, and with top-1 / top-5 log-probs (what weighted votes, best-of-N by
log-prob and DeepConf ask for).

llama-cpp-python's server (``make install``) serves one request at a time and sorts the whole
vocabulary in Python for every token that asks for log-probs; llama.cpp's ``llama-server``
(``make llama-server``) batches its slots and computes log-probs in C++. Both serve the same
GGUF with the same threads, one after the other in one run.

``python -m benchmarks.bench_backends --model qwen-0.5b``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from benchmarks.datasets import GSM8K, load


async def _one(client: Any, model: str, prompt: str, seed: int, max_tokens: int, **extra: Any) -> int:
    response = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.7,
        seed=seed,
        **extra,
    )
    return int(response.usage.completion_tokens)


async def measure(backend: str, args: argparse.Namespace, prompts: list[str]) -> dict[str, float]:
    """Tokens/s of each case on a fresh server of ``backend``."""
    from openai import AsyncOpenAI

    from scaffolding_nats.devstack import ModelServer

    parallel = args.parallel if backend == "llama-server" else 1
    server = ModelServer(
        args.model, n_ctx=2048, n_threads=args.threads, startup_timeout=180, backend=backend, parallel=parallel
    )
    rates: dict[str, float] = {}
    async with server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="local", timeout=900, max_retries=0)
        await _one(client, server.model, prompts[0], 0, 8)  # warm the weights into memory
        cases: list[tuple[str, int, dict[str, Any], int]] = [
            ("1 request", 1, {}, args.max_tokens),
            (f"{args.parallel} concurrent requests", args.parallel, {}, args.max_tokens),
            ("1 request, top-1 log-probs", 1, {"logprobs": True, "top_logprobs": 1}, args.logprob_tokens),
            ("1 request, top-5 log-probs", 1, {"logprobs": True, "top_logprobs": 5}, args.logprob_tokens),
        ]
        for name, count, extra, max_tokens in cases:
            started = time.monotonic()
            tokens = await asyncio.gather(
                *(
                    _one(client, server.model, prompts[i % len(prompts)], 10 + i, max_tokens, **extra)
                    for i in range(count)
                )
            )
            rates[name] = sum(tokens) / (time.monotonic() - started)
            line = f"  {backend:16} {name:28} {sum(tokens):5d} tokens  {rates[name]:6.1f} tokens/s"
            print(line, file=sys.stderr)
    return rates


async def main(args: argparse.Namespace) -> None:
    prompts = [p.prompt() for p in load(args.data)[: args.parallel]]
    results = {backend: await measure(backend, args, prompts) for backend in ("llama-cpp-python", "llama-server")}
    base, fast = results["llama-cpp-python"], results["llama-server"]
    print(f"{args.model}, {args.threads} threads, T = 0.7; tokens/s (llama-server ÷ llama-cpp-python)")
    print("| case | llama-cpp-python | llama-server | ratio |")
    print("|---|---|---|---|")
    for name in base:
        print(f"| {name} | {base[name]:.1f} | {fast[name]:.1f} | {fast[name] / base[name]:.1f}x |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen-0.5b")
    p.add_argument("--data", default=str(GSM8K))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=8, help="llama-server slots and concurrent requests")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--logprob-tokens", type=int, default=60, help="tokens of the log-prob cases (slow on one)")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
