"""Outages and failovers do not fail jobs: a 20 s NATS outage, the loss of the node leading the
jobs stream on a 3-node cluster, and a controller killed mid-job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import NatsCluster, NatsServer
from scaffolding_nats.proto import Subjects
from scaffolding_nats.security.permissions import Deployment

from .conftest import Procs, check_stream_and_records, connect, majority_jobs, retried, until

OUTAGE_S = 20.0


async def test_a_20s_nats_outage_fails_no_job_and_followers_see_every_end(procs: Procs, prefix: str, tmp_path: Path):
    """100 jobs running (4 samples of 2 s each); nats-server killed (-9) for 20 s and restarted
    on the same store. Every job succeeds once, and every live follower sees its end."""
    subjects = Subjects(prefix)
    server = NatsServer(store_dir=tmp_path / "nats", deployment=Deployment(subjects=subjects)).start()
    try:
        nc = await connect(server.url, subjects)
        procs.worker(server, latency=2.0)
        procs.controller(server)
        procs.wait_ready()
        try:
            client = JobClient(nc, subjects=subjects)
            followed = majority_jobs(100, samples=4)
            runs = [asyncio.create_task(f.run(client, timeout=90)) for f in followed]
            await until(lambda: all(f.accepted for f in followed), 30, "every job accepted")
            server.kill()
            await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(asyncio.gather(*runs), 60)
            for f in followed:
                f.check()
            await check_stream_and_records(nc, subjects, followed)
        finally:
            await nc.close()
    finally:
        server.stop()


async def test_killing_the_jobs_stream_leader_of_a_3_node_cluster_loses_no_job(procs: Procs, prefix: str):
    """200 jobs on a 3-node cluster (streams, consumer and bucket with 3 replicas), most still
    queued when the node leading the jobs stream is killed (-9): all 200 succeed, once each."""
    subjects = Subjects(prefix)
    async with NatsCluster(3, deployment=Deployment(subjects=subjects)) as cluster:
        nc = await connect(cluster.url, subjects)
        procs.worker(cluster, latency=0.5)
        procs.controller(cluster, max_jobs=40)
        procs.wait_ready()
        try:
            js = nc.jetstream()
            info = await retried(lambda: js.stream_info(subjects.jobs_stream))
            assert info.config.num_replicas == 3 and info.cluster is not None and info.cluster.leader
            kv = await retried(lambda: js.stream_info(f"KV_{subjects.results_bucket}"))
            assert kv.config.num_replicas == 3
            client = JobClient(nc, subjects=subjects)
            followed = majority_jobs(200, samples=2)
            runs = [asyncio.create_task(f.run(client, timeout=90)) for f in followed]
            await until(lambda: sum(f.accepted for f in followed) >= 20, 30, "jobs running")
            leader = (await retried(lambda: js.stream_info(subjects.jobs_stream))).cluster.leader  # type: ignore[union-attr]
            await asyncio.to_thread(cluster.node(leader).kill)
            await asyncio.wait_for(asyncio.gather(*runs), 90)
            for f in followed:  # events published while no node led the events stream are lost
                f.check(gapless=False)
            await check_stream_and_records(nc, subjects, followed, gapless=False)
            after = await retried(lambda: js.stream_info(subjects.jobs_stream))
            assert after.cluster is not None and after.cluster.leader != leader
        finally:
            await nc.close()


async def test_a_killed_controllers_jobs_finish_on_the_other_within_10s(procs: Procs, prefix: str):
    """Two controller processes with 8 jobs each (2 s tasks); one is killed (-9) mid-job. Its
    jobs are taken over and finish within 10 s of the kill, their event seq continued."""
    subjects = Subjects(prefix)
    with NatsServer(deployment=Deployment(subjects=subjects)) as server:
        nc = await connect(server.url, subjects)
        procs.worker(server, latency=2.0)
        doomed = procs.controller(server, name="controller-a", max_jobs=8)
        procs.controller(server, name="controller-b", max_jobs=8)
        procs.wait_ready()
        try:
            client = JobClient(nc, subjects=subjects)
            followed = majority_jobs(16, samples=2)
            runs = [asyncio.create_task(f.run(client, timeout=60)) for f in followed]
            await until(lambda: all(f.accepted for f in followed), 30, "every job accepted")
            doomed.proc.kill()
            killed = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*runs), 30)
            moved = [f for f in followed if any((e.progress or {}).get("delivery", 1) > 1 for _, e in f.events)]
            assert len(moved) == 8, [f.events for f in followed]
            for f in followed:
                f.check()
            late = {f.job.id: round(f.ended - killed, 1) for f in moved if f.ended and f.ended - killed > 10}
            assert not late, f"finished later than 10 s after the kill: {late}"
            await check_stream_and_records(nc, subjects, followed)
        finally:
            await nc.close()
