"""A NATS outage does not run finished work twice: a task that ended while the server was down
is answered with the final frame its worker kept (``transport.finals``), not run again."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.proto import Subjects
from scaffolding_nats.security.permissions import Deployment

from .conftest import Procs, check_stream_and_records, connect, majority_jobs, until

OUTAGE_S = 30.0
JOBS, SAMPLES = 200, 4


async def test_a_30s_outage_runs_each_of_800_tasks_at_most_about_once(procs: Procs, prefix: str, tmp_path: Path):
    """200 four-sample votes running (800 tasks of 2 s, every one in flight at the worker);
    nats-server killed (-9) for 30 s and restarted on the same store. The tasks end during the
    outage, their final frames lost with the connections; before ``finals`` every one of them
    ran again (1,600 runs). Now: at most 1.05 runs per task id, every job correct, once."""
    subjects = Subjects(prefix)
    server = NatsServer(store_dir=tmp_path / "nats", deployment=Deployment(subjects=subjects)).start()
    runs_log = tmp_path / "runs.log"
    try:
        nc = await connect(server.url, subjects)
        procs.worker(server, latency=2.0, runs_log=runs_log)
        procs.controller(server, max_jobs=JOBS)
        procs.wait_ready()
        try:
            client = JobClient(nc, subjects=subjects)
            followed = majority_jobs(JOBS, samples=SAMPLES)
            runs = [asyncio.create_task(f.run(client, timeout=OUTAGE_S + 90)) for f in followed]
            await until(lambda: all(f.accepted for f in followed), 30, "every job accepted")
            server.kill()
            await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(asyncio.gather(*runs), 90)
            for f in followed:
                f.check()
            await check_stream_and_records(nc, subjects, followed)
        finally:
            await nc.close()
    finally:
        server.stop()
    per_task = collections.Counter(runs_log.read_text().split())
    assert len(per_task) == JOBS * SAMPLES
    total = sum(per_task.values())
    twice = sorted(n for n in per_task.values() if n > 1)
    assert total / len(per_task) <= 1.05, f"{total} runs for {len(per_task)} tasks; run more than once: {twice}"
