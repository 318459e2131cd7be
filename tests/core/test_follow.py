"""EventFollower against a real nats-server: events the live feed missed while disconnected are
read back from the events stream, each once and in order; a gap the stream never held is skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from scaffolding_nats.devstack import NatsServer
from scaffolding_nats.follow import EventFollower
from scaffolding_nats.proto import JobEvent, JobEventType, JobResult, Subjects, encode
from scaffolding_nats.transport.jetstream import ensure_streams


def _event(job_id: str, seq: int, kind: JobEventType = JobEventType.PROGRESS) -> bytes:
    result = JobResult(text="done") if kind is JobEventType.RESULT else None
    return encode(JobEvent(job_id=job_id, seq=seq, type=kind, progress={"n": seq}, result=result))


async def test_events_missed_while_disconnected_are_replayed_once_in_order(tmp_path: Path, prefix: str):
    subjects = Subjects(prefix)
    server = NatsServer(store_dir=tmp_path).start()
    try:
        publisher = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
        # The follower comes back 3 s after the outage: whatever is published before that, it
        # can only have from the stream.
        follower_nc = await nats.connect(server.url, reconnect_time_wait=3.0, max_reconnect_attempts=-1)
        try:
            await ensure_streams(publisher.jetstream(), subjects)
            subject = subjects.events("job1")
            async with EventFollower(follower_nc, "job1", subjects=subjects, resync=60) as follower:
                await follower_nc.flush()
                await publisher.publish(subject, _event("job1", 0, JobEventType.ACCEPTED))
                events = follower.events(timeout=30)
                first = await anext(events)
                assert first.seq == 0
                server.kill()
                await asyncio.to_thread(server.start)
                await _until_connected(publisher)
                for seq in (1, 2):
                    await publisher.publish(subject, _event("job1", seq))
                await publisher.jetstream().publish(subject, _event("job1", 3, JobEventType.RESULT))
                assert not follower_nc.is_connected  # it really missed them live
                rest = [e async for e in events]
            assert [e.seq for e in rest] == [1, 2, 3] and rest[-1].type is JobEventType.RESULT
            assert follower.resyncs >= 1
        finally:
            await publisher.close()
            await follower_nc.close()
    finally:
        server.stop()


async def test_a_seq_the_stream_never_held_is_skipped_not_awaited(nc: Client, prefix: str):
    subjects = Subjects(prefix)
    await ensure_streams(nc.jetstream(), subjects)
    subject = subjects.events("job2")
    async with EventFollower(nc, "job2", subjects=subjects, resync=60) as follower:
        await nc.flush()
        await nc.publish(subject, _event("job2", 0, JobEventType.ACCEPTED))
        await nc.publish(subject, _event("job2", 2, JobEventType.RESULT))  # seq 1 was lost
        seen = [e.seq async for e in follower.events(timeout=10)]
    assert seen == [0, 2]


async def test_replay_after_a_seq_starts_after_it(nc: Client, prefix: str):
    subjects = Subjects(prefix)
    await ensure_streams(nc.jetstream(), subjects)
    subject = subjects.events("job3")
    for seq in range(3):
        await nc.publish(subject, _event("job3", seq))
    await nc.jetstream().publish(subject, _event("job3", 3, JobEventType.RESULT))
    async with EventFollower(nc, "job3", subjects=subjects, after_seq=1) as follower:
        seen = [e.seq async for e in follower.events(timeout=10)]
    assert seen == [2, 3]


async def _until_connected(nc: Client) -> None:
    for _ in range(500):  # 10 s at most
        if nc.is_connected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the publisher did not reconnect within 10 s")


def test_a_killed_and_restarted_server_leaves_no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """kill() then start() (every outage test) used to leave a scaf-nats-*.conf behind."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    server = NatsServer(store_dir=tmp_path / "store").start()
    server.kill()
    server.start()
    server.stop()
    assert not list((tmp_path / "tmp").glob("scaf-nats-*.conf"))
