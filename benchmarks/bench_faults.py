"""F1/F2: what a NATS outage and a controller kill cost running jobs, on real processes.

F1 (outage): a synthetic worker and a controller as processes, ``--jobs`` majority-vote jobs
running, each followed live by a ``JobClient``; nats-server is killed (-9) for ``--outage``
seconds and restarted on the same store. Reported: jobs correct / failed (by code), followers
that missed their terminal event, terminal events per job in the events stream (duplicates),
tasks the worker ran beyond the jobs' need, runs per task id (from the worker's runs log),
"could not store job" warnings.

F2 (controller kill): two controller processes share ``--kill-jobs`` jobs; one is killed (-9)
mid-job. Reported: how long after the kill its jobs were redelivered and finished, and whether a
client saw an event ``seq`` twice.

Run: ``python -m benchmarks.bench_faults`` (``--cluster --only outage``: F3, the same on a 3-node
cluster, killing the node that leads the jobs stream instead of stopping the only server).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import NatsCluster, NatsServer
from scaffolding_nats.devstack.procs import ServiceProcs
from scaffolding_nats.devstack.run import Service
from scaffolding_nats.proto import Job, JobEvent, JobEventType, Subjects, decode
from scaffolding_nats.security.permissions import Deployment
from scaffolding_nats.transport.jetstream import durability_for, provision

PREFIX = "faults"
DEPLOYMENT = Deployment(subjects=Subjects(PREFIX))  # the NATS users and their permissions


class Follower:
    """One job followed live; remembers what it saw and when."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.events: list[tuple[float, JobEvent]] = []
        self.error: str | None = None

    async def run(self, client: JobClient, timeout: float) -> None:
        try:
            async for event in client.events(self.job, timeout=timeout):
                self.events.append((time.monotonic(), event))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    @property
    def accepted(self) -> bool:
        return any(e.type is JobEventType.ACCEPTED for _, e in self.events)

    @property
    def terminal(self) -> JobEvent | None:
        ends = [e for _, e in self.events if e.type in (JobEventType.RESULT, JobEventType.ERROR)]
        return ends[-1] if ends else None


def _services(
    bus: NatsServer | NatsCluster, logs: Path, *, latency: float, controllers: int, max_jobs: int
) -> list[Service]:
    """Each service logs in as its own NATS role; the streams are provisioned (as admin) first."""
    asyncio.run(_provision(bus))
    procs = ServiceProcs(logs, PREFIX)
    # Capacity enough for every task at once: these figures are about faults, not load.
    procs.worker(bus, latency=latency, runs_log=logs / "runs.log", max_concurrency=8 * max_jobs)
    for i in range(controllers):
        procs.controller(bus, name=f"controller{i}", max_jobs=max_jobs)
    procs.wait_ready(60)
    return procs.started


def _correct(f: Follower) -> bool:
    end = f.terminal
    return end is not None and end.result is not None and end.result.answer == (f.job.prompt or "").split()[-1]


async def _provision(bus: NatsServer | NatsCluster) -> None:
    nc = await nats.connect(bus.url.split(","))
    try:
        await provision(nc.jetstream(), Subjects(PREFIX), durability_for(nc), tags=("generation",))
    finally:
        await nc.close()


async def _quiet(exc: Exception) -> None:
    """Reconnect attempts during the outage are expected; they are not news."""


async def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.05)


async def _terminal_counts(nc: Client, subjects: Subjects, jobs: list[Job]) -> collections.Counter[int]:
    """How many result/error events each job has in the events stream."""
    js = nc.jetstream()
    counts: collections.Counter[int] = collections.Counter()
    for job in jobs:
        seq, ends = 1, 0
        while True:
            try:
                raw = await js.get_msg(subjects.events_stream, seq=seq, subject=subjects.events(job.id), next=True)
            except NotFoundError:
                break
            ends += decode(JobEvent, raw.data or b"").type in (JobEventType.RESULT, JobEventType.ERROR)
            seq = (raw.seq or seq) + 1
        counts[ends] += 1
    return counts


async def _worker_completed(nc: Client) -> int:
    msg = await nc.request("$SRV.STATS.scaffolding-worker", b"", timeout=5)
    return sum(int(e.get("data", {}).get("completed", 0)) for e in json.loads(msg.data)["endpoints"])


async def outage(args: argparse.Namespace) -> None:
    subjects = Subjects(PREFIX)
    with tempfile.TemporaryDirectory(prefix="scaf-faults-") as tmp:
        server: NatsServer | NatsCluster
        if args.cluster:
            server = NatsCluster(3, store_dir=Path(tmp) / "nats", deployment=DEPLOYMENT).start()
        else:
            server = NatsServer(store_dir=Path(tmp) / "nats", deployment=DEPLOYMENT).start()
        services: list[Service] = []
        try:
            # On the cluster most jobs wait in the jobs stream when its leader dies (40 run at once).
            max_jobs = 40 if args.cluster else args.jobs
            services = await asyncio.to_thread(
                _services, server, Path(tmp), latency=args.latency, controllers=1, max_jobs=max_jobs
            )
            nc = await nats.connect(
                server.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=_quiet
            )
            client = JobClient(nc, subjects=subjects)
            jobs = [Job(method="majority_vote", prompt=f"a b {i}", params={"sample_num": 4}) for i in range(args.jobs)]
            followers = [Follower(job) for job in jobs]
            async with AsyncExitStack() as stack:
                stack.push_async_callback(nc.close)
                runs = [asyncio.create_task(f.run(client, args.timeout)) for f in followers]
                running = min(len(followers), max_jobs)
                await _wait(lambda: sum(f.accepted for f in followers) >= running, 60, "jobs running")
                if isinstance(server, NatsCluster):
                    info = await nc.jetstream().stream_info(subjects.jobs_stream)
                    leader = info.cluster.leader if info.cluster else None
                    assert leader, "the jobs stream has no leader"
                    server.node(leader).kill()
                    down = time.monotonic()
                    print(f"F3  jobs stream leader {leader} of 3 nodes killed; {args.jobs} jobs, {running} running")
                else:
                    server.kill()
                    down = time.monotonic()
                    print(f"F1  nats-server killed with {args.jobs} jobs running; down for {args.outage:.0f}s")
                    await asyncio.sleep(args.outage)
                    server.start()
                    print(f"    restarted after {time.monotonic() - down:.1f}s", flush=True)
                await asyncio.gather(*runs)
                done = time.monotonic() - down
                correct = len([f for f in followers if _correct(f)])
                codes = collections.Counter(
                    (t.error.code.value if t.error else "?")
                    for f in followers
                    if (t := f.terminal) and t.type is JobEventType.ERROR
                )
                missed = [f for f in followers if f.terminal is None]
                try:
                    terminals: Any = dict(sorted((await _terminal_counts(nc, subjects, jobs)).items()))
                except Exception as exc:  # e.g. a single-copy events stream on the dead node
                    terminals = f"unreadable ({type(exc).__name__})"
                completed = await _worker_completed(nc)
            stored = sum(s.log_path.read_text(errors="replace").count("could not store job") for s in services)
            runs_log = Path(tmp) / "runs.log"
            per_task = collections.Counter(runs_log.read_text().split() if runs_log.exists() else [])
            print(f"    all followers ended {done:.1f}s after the kill")
            print(f"    correct {correct}/{args.jobs}; failed by code {dict(codes)}")
            print(
                f"    followers that missed their terminal event: {len(missed)}"
                + (f" (e.g. {missed[0].error})" if missed else "")
            )
            print(f"    terminal events per job in the stream: {terminals}")
            print(
                f"    worker tasks completed {completed} (the jobs need {4 * args.jobs}); "
                f"'could not store job' warnings: {stored}"
            )
            twice = sum(1 for n in per_task.values() if n > 1)
            print(
                f"    runs per task id: {sum(per_task.values()) / max(1, len(per_task)):.3f} "
                f"({sum(per_task.values())} runs of {len(per_task)} tasks; {twice} ran more than once)"
            )
        finally:
            for service in services:
                service.stop()
            server.stop()


async def controller_kill(args: argparse.Namespace) -> None:
    subjects = Subjects(PREFIX)
    with tempfile.TemporaryDirectory(prefix="scaf-faults-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats", deployment=DEPLOYMENT).start()
        services: list[Service] = []
        try:
            services = await asyncio.to_thread(
                _services, server, Path(tmp), latency=args.kill_latency, controllers=2, max_jobs=32
            )
            nc = await nats.connect(server.url)
            client = JobClient(nc, subjects=subjects)
            jobs = [
                Job(method="majority_vote", prompt=f"a b {i}", params={"sample_num": 2}) for i in range(args.kill_jobs)
            ]
            followers = [Follower(job) for job in jobs]
            runs = [asyncio.create_task(f.run(client, args.timeout)) for f in followers]
            await _wait(lambda: all(f.accepted for f in followers), 60, "every job accepted")
            services[1].proc.kill()
            killed = time.monotonic()
            await asyncio.gather(*runs)
            await nc.close()
            moved = [f for f in followers if any(e.progress and e.progress.get("delivery", 1) > 1 for _, e in f.events)]
            redelivered = [
                min(t for t, e in f.events if e.progress and e.progress.get("delivery", 1) > 1) - killed for f in moved
            ]
            finished = [max(t for t, _ in f.events) - killed for f in moved]
            reused = sum(1 for f in followers if len({e.seq for _, e in f.events}) != len(f.events))
            ok = sum(1 for f in followers if (t := f.terminal) is not None and t.type is JobEventType.RESULT)
            print(
                f"\nF2  controller killed (-9) with {args.kill_jobs} jobs on 2 controllers, {args.kill_latency}s tasks"
            )
            print(
                f"    jobs redelivered: {len(moved)}; redelivery {min(redelivered, default=0):.1f}-"
                f"{max(redelivered, default=0):.1f}s after the kill; finished by {max(finished, default=0):.1f}s"
            )
            print(f"    succeeded {ok}/{args.kill_jobs}; followers that saw a seq twice: {reused}")
        finally:
            for service in services:
                service.stop()
            server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--outage", type=float, default=15.0)
    p.add_argument("--latency", type=float, default=2.0, help="synthetic task latency in F1 (s)")
    p.add_argument("--kill-jobs", type=int, default=20)
    p.add_argument("--kill-latency", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=120.0, help="each follower's deadline (s)")
    p.add_argument("--only", choices=["outage", "kill"], default=None)
    p.add_argument("--cluster", action="store_true", help="F3: kill the jobs stream's leader of 3 nodes instead")
    args = p.parse_args(argv)
    if args.only in (None, "outage"):
        asyncio.run(outage(args))
    if args.only in (None, "kill"):
        asyncio.run(controller_kill(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
