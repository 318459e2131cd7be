"""A worker replica killed under load: its tasks are redelivered to the survivor, which takes
them as its slots free up. Real worker processes, kill -9, default settings."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter

from scaffolding_nats.client import JobClient
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import Job, JobEvent, JobEventType, Subjects, decode
from scaffolding_nats.services.controller import ControllerService

from ..procs import worker_argv


async def _replica(url: str, prefix: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *worker_argv(url, prefix, "synthetic", worker_args={"latency_s": 0.2}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "SCAF_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"ready", line
    return proc


async def test_killing_one_of_two_replicas_under_200_votes_fails_none(nats_server, nc, prefix):
    subjects = Subjects(prefix)
    terminal: Counter[str] = Counter()

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        event = decode(JobEvent, msg.data)
        if event.type in (JobEventType.RESULT, JobEventType.ERROR):
            terminal[event.job_id] += 1

    events = await nc.subscribe(subjects.events_all, cb=on_event)
    replicas = [await _replica(nats_server.url, prefix) for _ in range(2)]
    try:
        client = JobClient(nc, subjects=subjects)
        async with ControllerService(nc, load_registry(), subjects=subjects):
            jobs = [
                Job(method="majority_vote", prompt=f"one two {i}", params={"sample_num": 4}) for i in range(200)
            ]
            done = 0
            some_done = asyncio.Event()

            async def run(job: Job):  # type: ignore[no-untyped-def]
                nonlocal done
                result = await client.run(job, timeout=90)
                done += 1
                if done >= 20:
                    some_done.set()
                return result

            running = [asyncio.create_task(run(job)) for job in jobs]
            await asyncio.wait_for(some_done.wait(), 60)
            replicas[0].kill()  # kill -9 mid-load: its running tasks are lost with it
            done_at_kill = done
            results = await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 90)
            stats = json.loads((await nc.request("$SRV.STATS.scaffolding-worker", b"", timeout=5)).data)
            taken_over = stats["endpoints"][0]["data"]["redelivered"]
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, failed[:3]
        assert done_at_kill < 150  # the kill came while most jobs were still to run
        assert taken_over >= 1  # the survivor ran tasks the dead replica had taken
        wrong = [i for i, r in enumerate(results) if r.answer != str(i) or r.num_tasks != 4]  # type: ignore[union-attr]
        assert not wrong, wrong[:5]
        await nc.flush()
        assert len(terminal) == 200 and set(terminal.values()) == {1}  # one outcome per job, none twice
    finally:
        await events.unsubscribe()
        for proc in replicas:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
