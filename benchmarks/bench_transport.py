"""P1 and P2: what the bus costs, measured side by side in one run.

P1: no-op tasks through RemoteWorker -> NATS -> WorkerHost, against the raw primitive the
task queue is built on (JetStream work-queue publish, pull, core reply, ack: ``raw_queue``), and
raw nats-py request/reply, on the same server at the same concurrency (and in-process, for scale).
P2: a majority-vote-shaped fan-out of 32 tasks to a worker with a fixed 200 ms latency:
wall time over one task's latency.

Run: ``make bench`` (or ``python -m benchmarks.bench_transport``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import nats

from scaffolding_nats import Controller, GenerationTask, ParallelProcess, ScaffoldingLlm
from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.proto import Subjects
from scaffolding_nats.transport import RemoteWorker, WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .raw_queue import RawQueueClient, serve_raw_queue


async def _load(
    call: Callable[[], Awaitable[None]], *, total: int, concurrency: int
) -> tuple[float, list[float]]:
    """Run ``total`` calls with ``concurrency`` in flight; return (calls/s, latencies)."""
    latencies: list[float] = []
    remaining = total

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return total / (time.perf_counter() - start), latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def p1(url: str, *, total: int, concurrency: int, rounds: int, separate: bool) -> dict[str, float]:
    """The serving side runs in its own process (``separate``) or in this one."""
    subjects = Subjects("bench")
    nc = await nats.connect(url)
    payload = b"x" * 200
    results: dict[str, list[tuple[float, list[float]]]] = {
        "raw": [],
        "raw-queue": [],
        "scaffolding": [],
        "in-process": [],
    }
    worker = SyntheticWorker()
    async with AsyncExitStack() as stack:
        if separate:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.bench_host",
                "--url",
                url,
                "--prefix",
                "bench",
                stdout=asyncio.subprocess.PIPE,
            )
            stack.push_async_callback(proc.wait)
            stack.callback(proc.terminate)
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), 30)
        else:
            host_nc = await nats.connect(url)
            stack.push_async_callback(host_nc.close)

            async def echo(msg: nats.aio.msg.Msg) -> None:
                await msg.respond(msg.data)

            await host_nc.subscribe("bench.raw", queue="raw", cb=echo)
            raw_queue = await serve_raw_queue(host_nc, "bench")
            stack.callback(raw_queue.cancel)
            await stack.enter_async_context(
                WorkerHost(
                    host_nc, SyntheticWorker(), tags=["generation"], subjects=subjects, max_concurrency=1024
                )
            )
        remote = RemoteWorker(nc, subjects=subjects)
        await remote.start()
        queue_client = RawQueueClient(nc, "bench")
        await queue_client.start()

        async def raw_call() -> None:
            await nc.request("bench.raw", payload, timeout=5)

        async def raw_queue_call() -> None:
            await queue_client.call(payload)

        async def scaf_call() -> None:
            task = GenerationTask(input_str="noop")
            await remote.run_task(task)
            assert task.ok, task.error

        async def local_call() -> None:
            task = GenerationTask(input_str="noop")
            await worker.run_task(task)

        await _load(raw_call, total=500, concurrency=concurrency)  # warm-up
        await _load(raw_queue_call, total=500, concurrency=concurrency)
        await _load(scaf_call, total=500, concurrency=concurrency)
        for _ in range(rounds):  # interleave rounds so drift hits all alike
            results["raw"].append(await _load(raw_call, total=total, concurrency=concurrency))
            results["raw-queue"].append(await _load(raw_queue_call, total=total, concurrency=concurrency))
            results["scaffolding"].append(await _load(scaf_call, total=total, concurrency=concurrency))
            results["in-process"].append(await _load(local_call, total=total, concurrency=concurrency))
        await remote.stop()
    await nc.close()

    def summary(name: str) -> tuple[float, float, float]:
        rates = [r for r, _ in results[name]]
        lats = [x for _, lat in results[name] for x in lat]
        return statistics.median(rates), _pct(lats, 50), _pct(lats, 99)

    raw, queue, scaf, local = summary("raw"), summary("raw-queue"), summary("scaffolding"), summary("in-process")
    where = "serving process separate" if separate else "all in one process"
    print(f"\nP1  no-op tasks, concurrency {concurrency}, {rounds} x {total} each, {where}")
    print(f"    {'path':<34}{'tasks/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, (rate, p50, p99) in (
        ("raw nats-py request/reply", raw),
        ("raw JetStream work queue", queue),
        ("RemoteWorker -> NATS -> WorkerHost", scaf),
        ("in-process Worker", local),
    ):
        print(f"    {name:<34}{rate:>10.0f}{p50:>9.3f}{p99:>9.3f}")
    ratio, lat_ratio = scaf[0] / queue[0], scaf[1] / queue[1]
    print(
        f"    vs the raw work queue: rate ratio {ratio:.2f}x (goal >= 0.6x), p50 ratio {lat_ratio:.2f}x (goal <= 1.5x);"
        f" vs raw request/reply: rate {scaf[0] / raw[0]:.2f}x, p50 {scaf[1] / raw[1]:.2f}x"
    )
    return {"rate_ratio": ratio, "p50_ratio": lat_ratio}


class _Sample(Controller):
    def process(self, tasks: list, **kwargs: object):  # type: ignore[no-untyped-def,type-arg]
        yield tasks


class _FanOut(Controller):
    """Majority-vote shaped: N sampler clones in one parallel group."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def process(self, tasks: list, **kwargs: object):  # type: ignore[no-untyped-def,type-arg]
        samplers = [_Sample() for _ in range(self.n)]
        lists = [[GenerationTask(input_str=f"sample {i}")] for i in range(self.n)]
        yield ParallelProcess(samplers, lists)
        tasks[0].copy_results_from(lists[0][0])


async def p2(url: str, *, fan: int, latency: float, rounds: int) -> dict[str, float]:
    nc = await nats.connect(url)
    host_nc = await nats.connect(url)
    subjects = Subjects("bench2")
    worker = SyntheticWorker(latency_s=latency)
    out: dict[str, float] = {}
    async with WorkerHost(host_nc, worker, tags=["generation"], subjects=subjects, max_concurrency=256):
        for name, workers in (
            ("in-process", {"generation": worker}),
            ("over NATS", {"generation": RemoteWorker(nc, subjects=subjects)}),
        ):
            walls = []
            async with ScaffoldingLlm(_FanOut(fan), workers) as llm:  # type: ignore[arg-type]
                await llm.generate_async("warm")
                for _ in range(rounds):
                    t = time.perf_counter()
                    await llm.generate_async("go")
                    walls.append(time.perf_counter() - t)
            out[name] = statistics.median(walls) / latency
    await nc.close()
    await host_nc.close()
    print(f"\nP2  fan-out of {fan} tasks, worker latency {latency * 1000:.0f} ms, median of {rounds}")
    for name, ratio in out.items():
        print(f"    {name:<12} wall / one task = {ratio:.3f}x (goal <= 1.05x)")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    async with NatsServer(jetstream=True) as server:
        for separate in (True, False):
            for c in args.concurrency:
                total = args.total if c > 1 else args.total // 3
                await p1(server.url, total=total, concurrency=c, rounds=args.rounds, separate=separate)
        await p2(server.url, fan=32, latency=0.2, rounds=5)


if __name__ == "__main__":
    asyncio.run(main())
