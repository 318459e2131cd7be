"""P5: N samples through the system against N sequential requests, on one llama.cpp server.

llama.cpp's server runs one request at a time. The system's majority vote sends its N samples
at once; this measures, side by side in one run (paths interleaved problem by problem, the
same prompts and seeds), what that costs against a peer that sends the N requests one after
another without streaming, and what the worker's options change:

* ``direct, sequential``: the peer: N plain completions requests, one after another.
* ``system, streamed, 8 in flight``: gateway-less stack (controller service + OpenAI worker over
  NATS), the worker streaming every request (the old default).
* ``system, unstreamed, 8 in flight``: the worker sends plain requests (``stream_plain=False``).
* ``system, unstreamed, 1 in flight``: and a per-backend limit of one request.

Besides wall time, each path's CPU seconds are measured: the llama.cpp server process's (from
``/proc``) and this process's (controller, worker, client). On a shared, loaded machine wall
time swings with the neighbours; CPU seconds per problem do not, and on a CPU-bound serialising
server they are what limits throughput.

Run: ``python -m benchmarks.bench_sampling --model qwen-0.5b --problems 4``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path as Path_

import nats
import openai

from benchmarks.datasets import GSM8K, load
from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import ModelServer, NatsServer
from scaffolding_nats.methods.base import mix_seed
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Job, SamplingParams, Subjects
from scaffolding_nats.proto.tasks import ChatMessage
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.services.controller.prompting import TEMPLATES
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers import OpenAIWorker


@dataclass
class Path:
    label: str
    run: Callable[[str, int], Awaitable[int]]
    """(prompt, job seed) -> completion tokens."""
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path_(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> int:
    problems = load(args.data)[: args.problems]
    with NatsServer(jetstream=True) as nats_server:
        model = ModelServer(args.model, n_ctx=args.n_ctx, n_threads=args.threads, startup_timeout=180)
        async with model, AsyncExitStack() as stack:
            nc = await nats.connect(nats_server.url, max_reconnect_attempts=0)
            stack.push_async_callback(nc.close)
            direct = openai.AsyncOpenAI(base_url=model.base_url, api_key="none", timeout=600)
            stack.push_async_callback(direct.close)

            async def sequential(prompt: str, seed: int) -> int:
                tokens = 0
                for i in range(args.n):
                    r = await direct.completions.create(
                        model=model.model,
                        prompt=prompt,
                        max_tokens=args.max_tokens,
                        temperature=args.temperature,
                        seed=mix_seed(seed, i),
                    )
                    tokens += r.usage.completion_tokens if r.usage else 0
                return tokens

            async def system(prefix: str, **worker_args: object) -> Callable[[str, int], Awaitable[int]]:
                subjects = Subjects(prefix)
                worker = OpenAIWorker(model.base_url, model=model.model, timeout=600, **worker_args)  # type: ignore[arg-type]
                await stack.enter_async_context(WorkerHost(nc, worker, tags=["generation"], subjects=subjects))
                await stack.enter_async_context(ControllerService(nc, load_registry(), subjects=subjects))
                client = JobClient(nc, subjects=subjects)

                async def run(prompt: str, seed: int) -> int:
                    job = Job(
                        method="majority_vote",
                        prompt=prompt,
                        params={"sample_num": args.n},
                        sampling=SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=seed),
                    )
                    result = await client.run(job, timeout=1200)
                    return result.usage.completion_tokens

                return run

            paths = [
                Path("direct, sequential (peer)", sequential),
                Path("system, streamed, 8 in flight", await system("p5a", stream_plain=True, max_concurrency=8)),
                Path("system, unstreamed, 8 in flight", await system("p5b", stream_plain=False, max_concurrency=8)),
                Path("system, unstreamed, 1 in flight", await system("p5c", stream_plain=False, max_concurrency=1)),
            ]
            for i, problem in enumerate(problems):
                prompt = TEMPLATES["chatml"]([ChatMessage(role="user", content=problem.prompt())])
                order = paths[i % len(paths) :] + paths[: i % len(paths)]  # rotate who goes first
                assert model.proc is not None
                for path in order:
                    started, cpu0, own0 = time.perf_counter(), process_cpu(model.proc.pid), time.process_time()
                    tokens = await path.run(prompt, args.seed + i)
                    path.seconds.append(time.perf_counter() - started)
                    path.server_cpu.append(process_cpu(model.proc.pid) - cpu0)
                    path.client_cpu.append(time.process_time() - own0)
                    path.tokens.append(tokens)
                    print(
                        f"  {problem.id} {path.label}: {path.seconds[-1]:.1f}s wall, server CPU "
                        f"{path.server_cpu[-1]:.1f}s, client CPU {path.client_cpu[-1]:.2f}s, {tokens} tok",
                        file=sys.stderr,
                    )
    base = paths[0]
    base_rate = len(base.seconds) / sum(base.seconds) * 60
    base_cpu = (sum(base.server_cpu) + sum(base.client_cpu)) / len(base.seconds)
    print(
        f"Model {args.model}, llama.cpp ({args.threads} threads), {len(problems)} GSM8K problems, "
        f"{args.n} samples of at most {args.max_tokens} tokens at T={args.temperature}, paths interleaved.\n"
    )
    print(
        "| path | completion tokens / problem | server CPU s / problem | client CPU s / problem "
        "| CPU cost vs. peer | problems / min (wall) | wall rate vs. peer |"
    )
    print("|---|---|---|---|---|---|---|")
    for p in paths:
        n = len(p.seconds)
        rate = n / sum(p.seconds) * 60
        cpu = (sum(p.server_cpu) + sum(p.client_cpu)) / n
        print(
            f"| {p.label} | {sum(p.tokens) / n:.0f} | {sum(p.server_cpu) / n:.2f} | {sum(p.client_cpu) / n:.2f} "
            f"| {cpu / base_cpu:.2f}x | {rate:.2f} | {rate / base_rate:.2f}x |"
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen-0.5b")
    p.add_argument("--data", default=str(GSM8K))
    p.add_argument("--problems", type=int, default=4)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
