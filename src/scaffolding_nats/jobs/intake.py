"""Reading a job off the jobs stream: the contract a delivery must keep to be run.

A job's owner comes from its subject (``<prefix>.jobs.<method>[.<owner>]``), so permissions on
subjects decide who may submit as whom; its id from its body, or else from its
``Nats-Msg-Id``. A delivery that breaks the contract is answered under the best key it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from ..errors import ProtocolError
from ..proto import codec
from ..proto.errors import ErrorCode
from ..proto.messages import Job
from ..proto.subjects import HEADER_MSG_ID, Subjects

log = logging.getLogger(__name__)


async def pull(psub: Any, slots: asyncio.Semaphore, start: Callable[[Msg], object]) -> None:
    """Fetch a job from the jobs consumer whenever a slot is free, and ``start`` it (it frees
    the slot when done): a full controller fetches nothing, so other replicas take the work."""
    try:
        while True:
            await slots.acquire()
            try:
                msgs = await psub.fetch(1, timeout=1.0)
            except TimeoutError:
                slots.release()
                continue
            except Exception as exc:  # a reconnect in progress; try again shortly
                slots.release()
                log.warning("fetching jobs failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for i, msg in enumerate(msgs):
                if i:
                    await slots.acquire()
                start(msg)
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


def read_job(msg: Msg, subjects: Subjects, *, max_bytes: int) -> tuple[Job, str | None]:
    """The job and its owner; ProtocolError if the delivery breaks the contract (an owner
    that is no subject token, a body that is no job, a method other than its subject's)."""
    method, owner = subjects.split_job_subject(msg.subject) or ("", None)
    if owner is not None and not codec.is_id(owner):
        raise ProtocolError(
            f"owner {owner!r} in {msg.subject!r} is not a valid subject token",
            code=ErrorCode.INVALID,
            details={"subject": msg.subject},
        )
    obj = codec.unpack_map(msg.data, max_bytes=max_bytes)
    msg_id = id_in_msg_id(msg, owner)
    if "id" not in obj and msg_id is not None:  # a job without an ``id`` takes its key's
        obj["id"] = msg_id
    job = codec.validate(Job, obj)
    if method != job.method:
        raise ProtocolError(
            f"job names method {job.method!r} but was published on {msg.subject!r}",
            code=ErrorCode.INVALID,
            details={"subject": msg.subject, "method": job.method},
        )
    return job, owner


def rejected_key(msg: Msg, subjects: Subjects) -> tuple[str | None, str | None]:
    """Under which job id and owner a rejected delivery is answered: its id is the one in the
    job if it is a valid subject token, else the one in its ``Nats-Msg-Id``; None with neither,
    or with an owner that is no subject token (no subject of its owner can be named)."""
    owner = owner_of(subjects, msg.subject)
    if owner is not None and not codec.is_id(owner):
        return None, owner
    job_id = codec.peek_id(msg.data, "id")
    return (job_id if job_id is not None else id_in_msg_id(msg, owner)), owner


def id_in_msg_id(msg: Msg, owner: str | None) -> str | None:
    """The job id a ``Nats-Msg-Id`` names: the key ``<owner>.<id>`` of an owned job (or a bare
    id, as clients older than owner-scoped keys send), the id itself for an owner-less one."""
    msg_id = msg.headers.get(HEADER_MSG_ID) if msg.headers else None
    if not isinstance(msg_id, str):
        return None
    if owner is not None and msg_id.startswith(f"{owner}."):
        msg_id = msg_id[len(owner) + 1 :]
    return msg_id if codec.is_id(msg_id) else None


def owner_of(subjects: Subjects, subject: str) -> str | None:
    split = subjects.split_job_subject(subject)
    return split[1] if split else None


def stream_seq(msg: Msg) -> int | None:
    return msg.metadata.sequence.stream if msg.metadata else None


def abandoned_subject(subjects: Subjects) -> str:
    """Where JetStream says it gave up on a job (delivered ``max_deliver`` times, never acked)."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{subjects.jobs_stream}.{subjects.jobs_consumer}"


async def consumer_problem(js: Any, subjects: Subjects) -> str | None:
    """Why no job can reach a controller (its jobs consumer is gone: deleted by hand, or the
    stream lost), or None when the consumer is there."""
    try:
        await js.consumer_info(subjects.jobs_stream, subjects.jobs_consumer)
    except Exception as exc:
        return (
            f"jobs consumer {subjects.jobs_stream}/{subjects.jobs_consumer} unavailable ({exc!r}); "
            "run `python -m scaffolding_nats.services.admin init`"
        )
    return None
