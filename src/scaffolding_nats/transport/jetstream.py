"""The durable parts of the bus, declared in one place: the jobs work queue and its consumer,
the events log and the results bucket. ``provision`` creates them (idempotently) and needs
the admin role; services only ``check`` them and fail with ``NotProvisioned`` when missing.

Each is kept in ``Durability.replicas`` copies: 1 on a single server, 3 on a cluster (so losing
a node loses neither queued jobs nor results); ``SCAF_JS_REPLICAS`` overrides the choice."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace

from nats.aio.client import Client
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

from ..errors import ScaffoldingError
from ..proto.errors import ErrorCode
from ..proto.subjects import Subjects

log = logging.getLogger(__name__)
ADMIN_INIT = "python -m scaffolding_nats.services.admin init"


class NotProvisioned(ScaffoldingError):
    """A stream, consumer or bucket is missing: only the admin role creates them."""

    code = ErrorCode.INTERNAL


@dataclass(frozen=True)
class Durability:
    job_ack_wait: float = 3.0  # seconds; a dead controller's jobs move on after this long
    job_max_deliver: int = 5  # a job whose controller died is retried this many times in all
    events_max_age: float = 3600.0  # replayable events are kept this long
    results_ttl: float = 3600.0  # finished jobs stay retrievable this long
    max_job_bytes: int = 1024 * 1024
    replicas: int = 1  # copies of every stream, consumer and bucket (3 on a cluster)


def clustered(nc: Client) -> bool:
    """Whether the server ``nc`` reached is one of a cluster (its INFO names the cluster)."""
    return bool(nc._server_info.get("cluster"))


def durability_for(nc: Client, base: Durability | None = None) -> Durability:
    """The durability settings for the deployment ``nc`` reached: ``base`` (defaults if None)
    with ``SCAF_JS_REPLICAS`` copies if that is set, else 3 on a cluster and 1 on one server."""
    base = base or Durability()
    env = os.environ.get("SCAF_JS_REPLICAS", "").strip()
    replicas = int(env) if env else (3 if clustered(nc) else 1)
    if not 1 <= replicas <= 5:
        raise ValueError(f"SCAF_JS_REPLICAS must be 1..5 (JetStream's limit), not {replicas}")
    return replace(base, replicas=replicas)


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
        num_replicas=d.replicas,
    )
    events = StreamConfig(
        name=subjects.events_stream,
        subjects=[subjects.events_all],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=d.events_max_age,
        max_bytes=1024**3,
        num_replicas=d.replicas,
    )
    cancels = StreamConfig(
        name=subjects.cancels_stream,
        subjects=[subjects.cancel_job_all],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=d.results_ttl,
        max_msgs_per_subject=1,
        max_bytes=64 * 1024**2,
        discard=DiscardPolicy.OLD,
        num_replicas=d.replicas,
    )
    for config in (jobs, events, cancels):
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
        return await js.create_key_value(
            KeyValueConfig(bucket=subjects.results_bucket, ttl=d.results_ttl, replicas=d.replicas)
        )


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
        num_replicas=d.replicas,
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
async def task_queues_missing(js: JetStreamContext, subjects: Subjects, tags: Iterable[str]) -> list[str]:
    """The tags' consumers (``<stream>/<consumer>``) that do not exist; reading a consumer is
    all a worker may do, and a missing stream shows as every consumer missing."""
    stream = subjects.tasks_stream
    return [
        f"{stream}/{subjects.task_consumer(tag)}"
        for tag in tags
        if not await _exists(js.consumer_info(stream, subjects.task_consumer(tag)))
    ]


async def provision_task_queues(
    js: JetStreamContext,
    subjects: Subjects,
    tags: Iterable[str],
    durability: Durability | None = None,
    settings: TaskQueueSettings | None = None,
) -> None:
    """Create or update the task stream and the tags' consumers (needs the admin role)."""
    await ensure_task_stream(js, subjects, durability, settings)
    for tag in tags:
        await ensure_task_consumer(js, subjects, tag, durability, settings)


async def check_task_queues(js: JetStreamContext, subjects: Subjects, tags: Iterable[str]) -> None:
    gone = await task_queues_missing(js, subjects, tags)
    if gone:
        raise NotProvisioned(
            f"JetStream task queues are not provisioned for prefix {subjects.prefix!r}: missing {', '.join(gone)}. "
            f"Run `{ADMIN_INIT} --tags <tags>` as the NATS admin user first.",
            details={"missing": gone, "prefix": subjects.prefix},
        )


async def _exists(lookup: Awaitable[object]) -> bool:
    try:
        await lookup
    except (NotFoundError, BadRequestError):
        return False
    return True


async def missing(js: JetStreamContext, subjects: Subjects, *, consumer: bool = True) -> list[str]:
    """The names of the durable parts that do not exist (read-only: any role may ask)."""
    names = [subjects.jobs_stream, subjects.events_stream, f"KV_{subjects.results_bucket}"]
    gone = [n for n in names if not await _exists(js.stream_info(n))]
    if not consumer or subjects.jobs_stream in gone:
        return gone
    if not await _exists(js.consumer_info(subjects.jobs_stream, subjects.jobs_consumer)):
        gone.append(f"{subjects.jobs_stream}/{subjects.jobs_consumer}")
    return gone


async def check(js: JetStreamContext, subjects: Subjects, *, consumer: bool = True) -> None:
    """Raise ``NotProvisioned`` (naming what is missing and the command that creates it)."""
    gone = await missing(js, subjects, consumer=consumer)
    if gone:
        raise NotProvisioned(
            f"JetStream is not provisioned for prefix {subjects.prefix!r}: missing {', '.join(gone)}. "
            f"Run `{ADMIN_INIT}` as the NATS admin user first.",
            details={"missing": gone, "prefix": subjects.prefix},
        )


async def provision(
    js: JetStreamContext, subjects: Subjects, durability: Durability | None = None, *, tags: Iterable[str] = ()
) -> KeyValue:
    """Create or update every durable part (needs the admin role), with a task queue consumer
    for each of ``tags``; returns the bucket."""
    await ensure_streams(js, subjects, durability)
    await provision_task_queues(js, subjects, tags, durability)
    kv = await results_bucket(js, subjects, durability)
    # Creates the durable, or updates it in place when it exists.
    await js.add_consumer(subjects.jobs_stream, jobs_consumer_config(subjects, durability))
    return kv
