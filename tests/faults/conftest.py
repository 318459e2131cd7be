"""Fault tests: a worker and controllers as real processes on a real nats-server (or a local
3-node cluster) that the test kills; jobs are followed live exactly as a remote client would.

Tasks run on the synthetic worker (fixed latency, answers checkable), so no model is needed;
``devstack.procs`` starts the processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack.procs import ServiceProcs as Procs
from scaffolding_nats.proto import Job, JobEvent, JobEventType, JobState, Subjects, decode
from scaffolding_nats.transport.jetstream import durability_for, provision

TERMINAL = (JobEventType.RESULT, JobEventType.ERROR)
T = TypeVar("T")


@pytest.fixture
def procs(tmp_path: Path, prefix: str) -> Iterator[Procs]:
    p = Procs(tmp_path, prefix)
    try:
        yield p
    finally:
        p.stop()


async def connect(urls: str, subjects: Subjects) -> Client:
    """An admin client that rides out outages the way the services do (reconnects for ever),
    after provisioning the streams, consumer and bucket (with the deployment's replica count)."""

    async def quiet(exc: Exception) -> None:  # refused reconnects during an outage are expected
        pass

    nc = await nats.connect(urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=quiet)
    await provision(nc.jetstream(), subjects, durability_for(nc), tags=("generation",))
    return nc


@dataclass
class Followed:
    """One job submitted and followed live from before any fault to its end."""

    job: Job
    expected: str
    events: list[tuple[float, JobEvent]] = field(default_factory=list)
    failure: BaseException | None = None

    async def run(self, client: JobClient, timeout: float) -> None:
        try:
            async for event in client.events(self.job, timeout=timeout):
                self.events.append((time.monotonic(), event))
        except Exception as exc:
            self.failure = exc

    @property
    def accepted(self) -> bool:
        return any(e.type is JobEventType.ACCEPTED for _, e in self.events)

    @property
    def ended(self) -> float | None:
        return next((t for t, e in self.events if e.type in TERMINAL), None)

    def check(self, *, gapless: bool = True) -> None:
        """Exactly one terminal event, a correct result, and seq rising from 0 (without gaps
        unless events may have been published while no node stored them)."""
        seqs = [e.seq for _, e in self.events]
        if gapless:
            assert seqs == list(range(len(seqs))), (self.job.id, seqs)
        assert seqs == sorted(set(seqs)), (self.job.id, seqs)
        ends = [e for _, e in self.events if e.type in TERMINAL]
        assert len(ends) == 1, (self.job.id, self.failure, [e.type for _, e in self.events])
        assert ends[0].result is not None and ends[0].result.answer == self.expected, ends[0]


def majority_jobs(n: int, samples: int) -> list[Followed]:
    return [
        Followed(Job(method="majority_vote", prompt=f"q r {i}", params={"sample_num": samples}), str(i))
        for i in range(n)
    ]


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)


async def stored_events(nc: Client, subjects: Subjects, job_id: str) -> list[JobEvent]:
    """Every event of a job that the events stream holds, in stream order."""
    js, events, seq = nc.jetstream(), [], 1
    while True:
        try:
            raw = await retried(
                partial(js.get_msg, subjects.events_stream, seq=seq, subject=subjects.events(job_id), next=True)
            )
        except NotFoundError:
            return events
        events.append(decode(JobEvent, raw.data or b""))
        seq = (raw.seq or seq) + 1


async def check_stream_and_records(
    nc: Client, subjects: Subjects, followed: list[Followed], *, gapless: bool = True
) -> None:
    """Nothing lost and nothing doubled as stored: one terminal event per job in the events
    stream, and a succeeded record per job."""
    js = nc.jetstream()
    client = JobClient(nc, subjects=subjects)
    for f in followed:
        stored = await stored_events(nc, subjects, f.job.id)
        seqs = [e.seq for e in stored]
        assert seqs == (list(range(len(seqs))) if gapless else sorted(set(seqs))), (f.job.id, stored)
        assert [e.type in TERMINAL for e in stored].count(True) == 1, f.job.id
        record = await retried(partial(client.record, f.job.id))
        assert record is not None and record.state is JobState.SUCCEEDED, (f.job.id, record)
    info = await retried(lambda: js.stream_info(subjects.jobs_stream))
    assert info.state.messages == 0  # every job acked: none left to run again


async def retried(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """A JetStream API call, retried while a cluster that just lost a node settles."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
