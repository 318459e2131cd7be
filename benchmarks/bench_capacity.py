"""P3: load above the fleet's capacity waits instead of failing, and replicas add throughput.

K = 1, 2, 4 worker replicas (real worker processes, ``--max-concurrency 4``, synthetic 100 ms
tasks) under 64 and 256 tasks in flight through one RemoteWorker: tasks/s, failures, p50/p99.
Capacity is K x 4 slots / 0.1 s; the goal is 0 failures, throughput >= 0.9 x capacity and
4 replicas >= 3.6 x one replica.

Run: ``make bench`` (or ``python -m benchmarks.bench_capacity``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack

import nats

from scaffolding_nats import GenerationTask
from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import RemoteWorker

SLOTS = 4


async def start_replica(url: str, prefix: str, latency: float) -> asyncio.subprocess.Process:
    """One worker replica as its own process, as deployed; returns once it serves."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scaffolding_nats.services.worker", "--nats", url, "--prefix", prefix,
        "--worker", "synthetic", "--worker-args", json.dumps({"latency_s": latency}),
        "--max-concurrency", str(SLOTS),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "SCAF_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"ready":
        raise RuntimeError(f"worker replica did not start: {line!r}")
    return proc


async def run_load(remote: RemoteWorker, *, total: int, concurrency: int) -> tuple[float, list[float], Counter[str]]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    remaining = total

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            n = remaining
            task = GenerationTask(input_str=f"w{n} x")
            t = time.perf_counter()
            await remote.run_task(task)
            latencies.append(time.perf_counter() - t)
            ok = task.ok and task.output_str == f"x w{n}"
            outcomes["ok" if ok else (task.error.code.value if task.error else "wrong")] += 1

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return outcomes["ok"] / (time.perf_counter() - start), latencies, outcomes


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=8.0, help="approximate run time per point")
    args = parser.parse_args()
    rates: dict[tuple[int, int], float] = {}
    print(f"\nP3  tasks above capacity: K replicas x {SLOTS} slots x {args.latency * 1000:.0f} ms synthetic tasks")
    print(f"    {'K':>2}{'in flight':>10}{'tasks':>7}{'capacity/s':>12}{'tasks/s':>9}{'x cap':>7}"
          f"{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")  # fmt: skip
    async with NatsServer(jetstream=True) as server:
        for k in args.replicas:
            prefix = f"p3k{k}"
            async with AsyncExitStack() as stack:
                procs = [await start_replica(server.url, prefix, args.latency) for _ in range(k)]
                for proc in procs:
                    stack.push_async_callback(proc.wait)
                    stack.callback(proc.terminate)
                nc = await nats.connect(server.url)
                stack.push_async_callback(nc.close)
                remote = RemoteWorker(nc, subjects=Subjects(prefix))
                await remote.start()
                stack.push_async_callback(remote.stop)
                capacity = k * SLOTS / args.latency
                for c in args.in_flight:
                    total = int(capacity * args.seconds) + c
                    rate, lat, outcomes = await run_load(remote, total=total, concurrency=c)
                    rates[(k, c)] = rate
                    failed = total - outcomes["ok"]
                    print(f"    {k:>2}{c:>10}{total:>7}{capacity:>12.0f}{rate:>9.1f}{rate / capacity:>7.2f}"
                          f"{failed:>8}{_pct(lat, 50):>9.0f}{_pct(lat, 99):>9.0f}"
                          + (f"   {dict(outcomes)}" if failed else ""))  # fmt: skip
    for c in args.in_flight:
        if (1, c) in rates and (4, c) in rates:
            print(f"    {c} in flight: 4 replicas / 1 replica = {rates[(4, c)] / rates[(1, c)]:.2f}x (goal >= 3.6x)")


if __name__ == "__main__":
    asyncio.run(main())
