"""The durable parts of the bus, declared in one place and created idempotently by whichever
service starts first: the jobs work queue, the events log and the results bucket."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from ..proto.subjects import Subjects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Durability:
    job_ack_wait: float = 30.0  # seconds; running jobs report progress to extend it
    job_max_deliver: int = 3  # a job whose controller died is retried this many times in all
    events_max_age: float = 3600.0  # replayable events are kept this long
    results_ttl: float = 3600.0  # finished jobs stay retrievable this long
    max_job_bytes: int = 1024 * 1024
    replicas: int = 1


async def ensure_streams(js: JetStreamContext, subjects: Subjects, durability: Durability | None = None) -> None:
    d = durability or Durability()
    jobs = StreamConfig(
        name=subjects.jobs_stream,
        subjects=[subjects.jobs_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_msg_size=d.max_job_bytes,
        duplicate_window=120.0,
        discard=DiscardPolicy.OLD,
    )
    events = StreamConfig(
        name=subjects.events_stream,
        subjects=[subjects.events_all],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=d.events_max_age,
        max_bytes=1024**3,
    )
    for config in (jobs, events):
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)


async def results_bucket(js: JetStreamContext, subjects: Subjects, durability: Durability | None = None) -> KeyValue:
    d = durability or Durability()
    try:
        return await js.key_value(subjects.results_bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_key_value(KeyValueConfig(bucket=subjects.results_bucket, ttl=d.results_ttl))


def jobs_consumer_config(subjects: Subjects, durability: Durability | None = None) -> ConsumerConfig:
    d = durability or Durability()
    return ConsumerConfig(
        durable_name=subjects.jobs_consumer,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=d.job_ack_wait,
        max_deliver=d.job_max_deliver,
        max_ack_pending=10_000,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=subjects.jobs_all,
    )


@dataclass(frozen=True)
class TaskQueueSettings:
    """The per-tag task work queues: a replica that stops reporting progress for ``ack_wait``
    seconds (killed, partitioned) has its tasks redelivered to another, at most
    ``max_deliver`` times in all; tasks nobody took are dropped after ``max_age``."""

    ack_wait: float = 6.0
    max_deliver: int = 5
    max_age: float = 3600.0
    max_task_bytes: int = 1024 * 1024


async def ensure_task_stream(
    js: JetStreamContext,
    subjects: Subjects,
    durability: Durability | None = None,
    settings: TaskQueueSettings | None = None,
) -> None:
    """One work-queue stream holds every tag's queued tasks (each tag its own subject)."""
    d, q = durability or Durability(), settings or TaskQueueSettings()
    config = StreamConfig(
        name=subjects.tasks_stream,
        subjects=[subjects.task_queue_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_msg_size=q.max_task_bytes,
        max_age=q.max_age,
        max_msgs=1_000_000,  # a count, not bytes: a byte limit reserves storage up front
        discard=DiscardPolicy.NEW,  # a full queue refuses new tasks (the caller retries) rather than drop old ones
        num_replicas=d.replicas,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:  # exists with another configuration
        await js.update_stream(config)


def task_consumer_config(
    subjects: Subjects,
    worker_tag: str,
    durability: Durability | None = None,
    settings: TaskQueueSettings | None = None,
) -> ConsumerConfig:
    d, q = durability or Durability(), settings or TaskQueueSettings()
    return ConsumerConfig(
        durable_name=subjects.task_consumer(worker_tag),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=q.ack_wait,
        max_deliver=q.max_deliver,
        max_ack_pending=100_000,  # each replica bounds itself by its free slots
        max_waiting=4096,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=subjects.task_queue(worker_tag),
        num_replicas=d.replicas,
    )


async def ensure_task_consumer(
    js: JetStreamContext,
    subjects: Subjects,
    worker_tag: str,
    durability: Durability | None = None,
    settings: TaskQueueSettings | None = None,
) -> None:
    """Idempotent: every replica of a tag declares the same durable consumer. The server updates
    one that exists with other settings (another replica's ``--task-ack-wait``): the last replica
    to start sets them, so give a tag's replicas the same settings."""
    config = task_consumer_config(subjects, worker_tag, durability, settings)
    try:
        await js.add_consumer(subjects.tasks_stream, config)
    except BadRequestError as exc:
        info = await js.consumer_info(subjects.tasks_stream, subjects.task_consumer(worker_tag))
        log.warning("consumer %s exists with other settings (%s); keeping them", info.name, exc.description)
