"""Hostile jobs on the bus: every one gets a typed error at once (no redelivery, no crash), and
the controller keeps serving. Also: ids, the order of events, cancels with no controller."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from scaffolding_nats.client import JobClient
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import ErrorCode, Job, JobEvent, JobEventType, JobState, Subjects, decode
from scaffolding_nats.proto.subjects import HEADER_MSG_ID
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.synthetic import SyntheticWorker


def _deep(n: int) -> Any:
    node: Any = 1
    for _ in range(n):
        node = {"a": node}
    return node


def _job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "id": job_id, "method": "native", "prompt": "a b", **fields}


POISON: dict[str, tuple[dict[str, Any], ErrorCode]] = {
    "list_version": ({**_job("p1"), "v": [1]}, ErrorCode.UNSUPPORTED_VERSION),
    "timestamp": (_job("p2", params={"t": msgpack.Timestamp(1, 0)}), ErrorCode.INVALID),
    "bin_prompt": (_job("p3", prompt=b"\xff\xfe"), ErrorCode.INVALID),
    "deep_params": (_job("p4", params=_deep(600)), ErrorCode.INVALID),
    "stream_yes": (_job("p5", stream="yes"), ErrorCode.INVALID),
    "sample_num_text": (_job("p6", method="majority_vote", params={"sample_num": "3"}), ErrorCode.INVALID),
    "temperature_text": (_job("p7", sampling={"temperature": "0.5"}), ErrorCode.INVALID),
    "max_tokens_float": (_job("p8", sampling={"max_tokens": 2.0}), ErrorCode.INVALID),
    "unknown_method": (_job("p9", method="teleport"), ErrorCode.UNKNOWN_METHOD),
    "fan_out_too_wide": (_job("p10", method="majority_vote", params={"sample_num": 100000}), ErrorCode.INVALID),
    "list_as_key_params": (_job("p11", params=[1, 2]), ErrorCode.INVALID),
}


@pytest.fixture
def subjects(prefix: str) -> Subjects:
    return Subjects(prefix)


async def _first_events(nc: Any, subjects: Subjects, ids: list[str]) -> dict[str, list[JobEvent]]:
    """Subscribe to each id's events; returns the dict the callbacks fill."""
    got: dict[str, list[JobEvent]] = {i: [] for i in ids}
    for job_id in ids:

        async def cb(msg: Any, job_id: str = job_id) -> None:
            got[job_id].append(decode(JobEvent, msg.data))

        await nc.subscribe(subjects.events(job_id), cb=cb)
    await nc.flush()
    return got


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_poison_jobs_get_a_typed_error_at_once_and_are_not_redelivered(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    ids = [job["id"] for job, _ in POISON.values()]
    got = await _first_events(nc, subjects, ids)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects) as service,
    ):
        js = nc.jetstream()
        for job, _ in POISON.values():
            data = msgpack.packb(job, use_bin_type=True, datetime=False)
            await js.publish(subjects.jobs(str(job["method"])), data, headers={HEADER_MSG_ID: job["id"]})
        await _until(lambda: all(got[i] for i in ids))
        for name, (job, code) in POISON.items():
            events = got[job["id"]]
            assert [e.type for e in events] == [JobEventType.ERROR], name  # no `accepted` first
            assert events[0].seq == 0 and events[0].error is not None and events[0].error.code is code, name
            record = await client.record(job["id"])
            assert record is not None and record.state is JobState.FAILED, name
        info = await js.consumer_info(subjects.jobs_stream, subjects.jobs_consumer)
        assert info.num_ack_pending == 0 and info.num_pending == 0, "every poison job left the stream at once"
        assert service.jobs_rejected + service.jobs_failed >= len(POISON)
        stats = await nc.request(f"$SRV.STATS.{subjects.controller_service}", b"", timeout=2)
        assert b'"rejected"' in stats.data
        assert (await client.run(Job(method="native", prompt="p q"), timeout=10)).text == "q p"


async def test_job_ids_are_subject_tokens_or_taken_from_nats_msg_id(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    got = await _first_events(nc, subjects, ["hdr1", "hdr2"])
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        js = nc.jetstream()
        no_id = {"v": 1, "method": "native", "prompt": "x y"}
        await js.publish(subjects.jobs("native"), msgpack.packb(no_id), headers={HEADER_MSG_ID: "hdr1"})
        bad_id = {**no_id, "id": "bad.id"}
        await js.publish(subjects.jobs("native"), msgpack.packb(bad_id), headers={HEADER_MSG_ID: "hdr2"})
        for empty in ("", "*", "a b"):  # unaddressable: dropped at once, logged and counted
            await js.publish(subjects.jobs("native"), msgpack.packb({**no_id, "id": empty}))
        await _until(lambda: bool(got["hdr1"]) and got["hdr1"][-1].type is JobEventType.RESULT and bool(got["hdr2"]))
        assert got["hdr1"][-1].result is not None and got["hdr1"][-1].result.text == "y x"
        assert [e.type for e in got["hdr2"]] == [JobEventType.ERROR]
        assert got["hdr2"][0].error is not None and got["hdr2"][0].error.code is ErrorCode.INVALID
        await _until(lambda: True)
        info = await js.consumer_info(subjects.jobs_stream, subjects.jobs_consumer)
        await _until(lambda: True)
        assert info.num_pending == 0
    for bad in ("*", "a.b", ">", ""):
        with pytest.raises(ValueError):
            subjects.events(bad)
        with pytest.raises(ScaffoldingError):
            await client.cancel(bad)


async def test_cancelling_a_queued_job_while_no_controller_runs_is_not_lost(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    worker = SyntheticWorker()
    async with ControllerService(nc, load_registry(), subjects=subjects):
        pass  # streams, bucket and consumer exist; now no controller runs
    job = Job(method="native", prompt="never")
    got = await _first_events(nc, subjects, [job.id])
    await client.submit(job)
    await client.cancel(job.id)  # nobody hears the published cancel
    async with (
        WorkerHost(nc, worker, tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        await _until(lambda: bool(got[job.id]))
    assert got[job.id][-1].error is not None and got[job.id][-1].error.code is ErrorCode.CANCELLED
    assert worker.started == 0


async def test_metric_labels_come_from_a_closed_set(nc, subjects):
    from scaffolding_nats import metrics

    client = JobClient(nc, subjects=subjects)
    async with ControllerService(nc, load_registry(), subjects=subjects):
        for i in range(5):
            with pytest.raises(ScaffoldingError):
                await client.run(Job(method=f"random{i}", prompt="x"), timeout=10)
    labels = {s.labels["method"] for m in metrics.JOBS.collect() for s in m.samples}
    assert not any(label.startswith("random") for label in labels)
    assert "unknown" in labels
