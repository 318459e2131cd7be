"""The controller service against a real nats-server: durable jobs, events, results, errors."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from nats.js.errors import NoKeysError

from scaffolding_nats.client import JobClient, NoController
from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.methods.registry import load_registry
from scaffolding_nats.proto import ErrorCode, Job, JobEventType, JobState, Subjects, pack
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.transport.jetstream import provision
from scaffolding_nats.workers.synthetic import SyntheticWorker


@pytest.fixture
def subjects(prefix: str) -> Subjects:
    return Subjects(prefix)


async def test_job_runs_with_events_and_a_retrievable_result(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        assert "majority_vote" in await client.methods()
        job = Job(method="majority_vote", prompt="one two 7", params={"sample_num": 3})
        events = [e async for e in client.events(job, timeout=20)]
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[0].type is JobEventType.ACCEPTED and events[-1].type is JobEventType.RESULT
    result = events[-1].result
    assert result is not None and result.text == "7 two one" and result.answer == "7"
    assert result.num_tasks == 3 and result.usage.completion_tokens == 9
    record = await client.record(job.id)
    assert record is not None and record.state is JobState.SUCCEEDED and record.result == result


async def test_job_published_before_any_controller_runs_when_one_starts(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    queue: asyncio.Queue = asyncio.Queue()
    job = Job(method="native", prompt="a b c")
    sub = await nc.subscribe(subjects.events(job.id), cb=queue.put)
    async with ControllerService(nc, load_registry(), subjects=subjects):
        pass  # creates the durable stream and consumer, then goes away
    await client.submit(job)
    await asyncio.sleep(0.3)
    assert queue.empty()  # nobody ran it
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        events = []
        while not events or events[-1].type is not JobEventType.RESULT:
            from scaffolding_nats.proto import JobEvent, decode

            events.append(decode(JobEvent, (await asyncio.wait_for(queue.get(), 10)).data))
    await sub.unsubscribe()
    assert events[-1].result is not None and events[-1].result.text == "c b a"


@pytest.mark.parametrize(
    ("job", "code"),
    [
        (Job(method="teleport", prompt="x"), ErrorCode.UNKNOWN_METHOD),
        (Job(method="majority_vote", prompt="x", params={"sample_num": "many"}), ErrorCode.INVALID),
    ],
)
async def test_job_errors_reach_the_client_typed(nc, subjects, job, code):
    client = JobClient(nc, subjects=subjects)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        with pytest.raises(ScaffoldingError) as info:
            await client.run(job, timeout=20)
        assert info.value.code is code, info.value
        record = await client.record(job.id)
        assert record is not None and record.state is JobState.FAILED
        # the controller keeps serving
        assert (await client.run(Job(method="native", prompt="x y"), timeout=10)).text == "y x"


async def test_job_whose_tag_has_no_worker_fails_with_no_worker(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with ControllerService(nc, load_registry(), subjects=subjects):
        with pytest.raises(ScaffoldingError) as info:
            await client.run(Job(method="native", prompt="x"), timeout=20)
    assert info.value.code is ErrorCode.NO_WORKER and "generation" in info.value.message


async def test_best_of_n_without_a_reward_worker_says_it_fell_back(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        result = await client.run(Job(method="best_of_n", prompt="x y", params={"sample_num": 2}), timeout=20)
    assert result.text == "y x" and result.metadata["fallback"] == "reward_failed"


async def test_best_of_n_falls_back_when_the_reward_queue_exists_but_no_worker_takes_it(nc, subjects):
    """``admin init`` provisions the reward queue whether or not a reward worker runs: the
    scoring task then waits ``reward_wait`` seconds, not the whole task deadline (600 s)."""
    client = JobClient(nc, subjects=subjects)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects) as controller,
    ):
        await provision(nc.jetstream(), subjects, tags=["reward"])
        job = Job(method="best_of_n", prompt="x y", params={"sample_num": 2, "reward_wait": 1.0})
        started = time.monotonic()
        result = await client.run(job, timeout=20)
        assert time.monotonic() - started < 10
        assert result.text == "y x" and result.metadata["fallback"] == "reward_failed"
        # The scoring task was dropped from the queue, not left for a worker that comes later.
        info = await nc.jetstream().consumer_info(subjects.tasks_stream, subjects.task_consumer("reward"))
        assert info.num_pending == 0
        assert controller.ready


async def test_malformed_jobs_are_rejected_and_the_service_keeps_serving(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    queue: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(subjects.events("badjob1"), cb=queue.put)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        js = nc.jetstream()
        await js.publish(subjects.jobs("native"), b"\xc1garbage")
        await js.publish(
            subjects.jobs("native"), pack({"v": 1, "id": "badjob1", "method": "native", "budget": 5})
        )
        await js.publish(subjects.jobs("native"), pack({"v": 42, "id": "badjob2", "method": "native"}))
        from scaffolding_nats.proto import JobEvent, decode

        event = decode(JobEvent, (await asyncio.wait_for(queue.get(), 10)).data)
        assert event.type is JobEventType.ERROR and event.error is not None
        assert event.error.code is ErrorCode.INVALID and "budget" in event.error.message
        for _ in range(100):  # jobs run concurrently: badjob2 may still be on its way
            record = await client.record("badjob2")
            if record is not None:
                break
            await asyncio.sleep(0.05)
        assert record is not None and record.error is not None
        assert record.error.code is ErrorCode.UNSUPPORTED_VERSION
        assert (await client.run(Job(method="native", prompt="p q"), timeout=10)).text == "q p"


async def test_cancelling_a_job_stops_it_and_its_tasks(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    worker = SyntheticWorker(latency_s=30)
    async with (
        WorkerHost(nc, worker, tags=["generation"], subjects=subjects) as host,
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        job = Job(method="native", prompt="slow")
        seen = []
        async for event in client.events(job, timeout=20):
            seen.append(event)
            if event.type is JobEventType.ACCEPTED:
                await asyncio.sleep(0.3)
                await client.cancel(job.id)
        assert seen[-1].type is JobEventType.ERROR and seen[-1].error is not None
        assert seen[-1].error.code is ErrorCode.CANCELLED
        for _ in range(50):
            if host.stats.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert host.stats.in_flight == 0 and host.stats.cancelled == 1


async def test_replay_gives_a_late_subscriber_every_event(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        job = Job(method="native", prompt="late comer")
        await client.run(job, timeout=10)
        replayed = [e async for e in client.replay(job.id, timeout=5)]
    assert [e.type for e in replayed] == [JobEventType.ACCEPTED, JobEventType.RESULT]


async def test_no_controller_is_reported(nc, subjects):
    with pytest.raises(NoController):
        await JobClient(nc, subjects=subjects).methods(timeout=0.3)


async def test_controller_replicas_share_the_jobs(nc, nats_server, subjects):
    import nats as nats_client

    other = await nats_client.connect(nats_server.url)
    client = JobClient(nc, subjects=subjects)
    try:
        async with (
            WorkerHost(nc, SyntheticWorker(latency_s=0.2), tags=["generation"], subjects=subjects),
            ControllerService(nc, load_registry(), subjects=subjects, max_jobs=2) as a,
            ControllerService(other, load_registry(), subjects=subjects, max_jobs=2) as b,
        ):
            jobs = [Job(method="native", prompt=f"job {i}") for i in range(8)]
            results = await asyncio.gather(*(client.run(j, timeout=20) for j in jobs))
            assert [r.text for r in results] == [f"{i} job" for i in range(8)]
            # A controller counts a job once its record is stored and the job acked, which can
            # come just after the client saw the result event: wait for it, with a deadline.
            for _ in range(500):  # up to 10 s
                if a.jobs_done + b.jobs_done >= 8:
                    break
                await asyncio.sleep(0.02)
            assert a.jobs_done > 0 and b.jobs_done > 0 and a.jobs_done + b.jobs_done == 8
    finally:
        await other.close()


async def test_job_abandoned_by_dying_controllers_is_reported_not_lost(nc, subjects):
    """A controller that takes a job and dies (never acks) uses up its deliveries; the
    server's advisory makes a live controller tell the client and record the failure."""
    from scaffolding_nats.proto import JobEvent, decode
    from scaffolding_nats.transport.jetstream import Durability, ensure_streams, jobs_consumer_config

    durability = Durability(job_ack_wait=1.0, job_max_deliver=1)
    js = nc.jetstream()
    await ensure_streams(js, subjects, durability)
    dying = await js.pull_subscribe(subjects.jobs_all, durable=subjects.jobs_consumer, stream=subjects.jobs_stream,
                                    config=jobs_consumer_config(subjects, durability))
    job = Job(method="native", prompt="doomed")
    queue: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(subjects.events(job.id), cb=queue.put)
    await JobClient(nc, subjects=subjects).submit(job)
    taken = await dying.fetch(1, timeout=5)  # ...and never acked: this controller "died"
    assert len(taken) == 1
    async with ControllerService(nc, load_registry(), subjects=subjects, durability=durability):
        event = decode(JobEvent, (await asyncio.wait_for(queue.get(), 10)).data)
    assert event.type is JobEventType.ERROR and event.error is not None and "abandoned" in event.error.message
    record = await JobClient(nc, subjects=subjects).record(job.id)
    assert record is not None and record.state is JobState.FAILED


async def test_cancelling_a_queued_job_stops_it_from_ever_running(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    worker = SyntheticWorker()
    async with ControllerService(nc, load_registry(), subjects=subjects):
        pass  # streams, bucket and consumer exist; no controller runs now
    async with ControllerService(nc, load_registry(), subjects=subjects, max_jobs=1):
        # a controller is up (it hears the cancel) but the job is not submitted yet
        job = Job(method="native", prompt="never")
        await client.cancel(job.id)
        await asyncio.sleep(0.2)
        async with WorkerHost(nc, worker, tags=["generation"], subjects=subjects):
            with pytest.raises(ScaffoldingError) as info:
                await client.run(job, timeout=10)
    assert info.value.code is ErrorCode.CANCELLED and worker.started == 0


async def test_a_cancel_for_a_job_that_never_existed_writes_no_record(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with ControllerService(nc, load_registry(), subjects=subjects) as controller:
        await client.cancel("never-submitted")
        await JobClient(nc, subjects=subjects, owner="alice").cancel("never-submitted-either")
        await nc.flush()
        await asyncio.sleep(0.5)  # the controller heard both (one subscription, in order)
        try:
            keys = await controller.kv.keys()
        except NoKeysError:
            keys = []
    assert keys == []


async def test_rejected_jobs_are_logged_at_a_bounded_rate(nc, subjects, caplog):
    """A flood of bad jobs (a fuzzer sent 3,531) gives a few lines, not one per job."""
    received: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(subjects.events("bad-49"), cb=received.put)
    caplog.set_level(logging.WARNING, logger="scaffolding_nats.services.controller.service")
    async with ControllerService(nc, load_registry(), subjects=subjects):
        js = nc.jetstream()
        for i in range(50):
            await js.publish(subjects.jobs("native"), pack({"v": 42, "id": f"bad-{i}", "method": "native"}))
        await asyncio.wait_for(received.get(), 20)  # the last one was answered: all were rejected
        await asyncio.sleep(0.2)
    lines = [r for r in caplog.records if "rejected job" in r.getMessage()]
    assert 1 <= len(lines) <= 5, [r.getMessage() for r in lines]


async def test_job_on_the_wrong_subject_is_rejected(nc, subjects):
    from scaffolding_nats.proto import JobEvent, decode, encode

    queue: asyncio.Queue = asyncio.Queue()
    job = Job(method="native", prompt="x")
    await nc.subscribe(subjects.events(job.id), cb=queue.put)
    async with ControllerService(nc, load_registry(), subjects=subjects):
        await nc.jetstream().publish(subjects.jobs("majority_vote"), encode(job))
        event = decode(JobEvent, (await asyncio.wait_for(queue.get(), 10)).data)
    assert event.error is not None and event.error.code is ErrorCode.INVALID and "published on" in event.error.message


async def test_stream_false_sends_no_partial_events(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with (
        WorkerHost(nc, SyntheticWorker(), tags=["generation"], subjects=subjects),
        ControllerService(nc, load_registry(), subjects=subjects),
    ):
        words = " ".join(f"w{i}" for i in range(40))
        streamed = [e.type async for e in client.events(Job(method="stream", prompt=words), timeout=10)]
        quiet = [e.type async for e in client.events(Job(method="stream", prompt=words, stream=False), timeout=10)]
    assert JobEventType.PARTIAL in streamed
    assert quiet == [JobEventType.ACCEPTED, JobEventType.RESULT]


async def test_stopping_a_controller_lets_running_jobs_finish(nc, subjects):
    client = JobClient(nc, subjects=subjects)
    async with WorkerHost(nc, SyntheticWorker(latency_s=0.5), tags=["generation"], subjects=subjects):
        service = ControllerService(nc, load_registry(), subjects=subjects)
        await service.__aenter__()
        running = asyncio.ensure_future(client.run(Job(method="native", prompt="a b"), timeout=10))
        await asyncio.sleep(0.2)
        await service.__aexit__(None, None, None)  # SIGTERM while the job runs
        assert (await running).text == "b a"
