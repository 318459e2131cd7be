"""Who may do what on the bus: one declarative table of roles, derived from ``Subjects``.

Every NATS user is one role. A grant lists the subjects a role may publish to and subscribe
to (``"subject queue"`` restricts a subscription to one queue group), and whether it may answer
the requests it receives (``responses``: NATS then lets it publish to those reply subjects only,
for as long as the request lives). Every role subscribes to its own private inbox prefix
(``_INBOX_<user>``), so no other role can read its replies. Only ``admin`` may create or delete
streams, consumers and buckets.

Changing a subject in ``Subjects`` changes every grant here; nothing else lists subjects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..proto.subjects import ANY, Subjects, check_token, inbox_prefix
from ..workers.kinds import deployed_tags

DEFAULT_WORKERS: Mapping[str, Sequence[str]] = deployed_tags()
"""Worker kind -> the tags it serves, as deployed by ``make run``, compose and ``k8s/``
(``workers.kinds``, the table the worker service reads too)."""


def env_suffix(user: str) -> str:
    """How a user is spelled in environment variable names: ``worker-openai`` -> ``WORKER_OPENAI``."""
    return user.upper().replace("-", "_")


SRV = "$SRV.>"  # NATS micro-service discovery (ping/info/stats), answered by every service


@dataclass(frozen=True)
class Grant:
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    responses: bool = False


@dataclass(frozen=True)
class Role:
    user: str
    grant: Grant
    description: str = ""

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user)

    @property
    def password_env(self) -> str:
        """The environment variable that holds this user's password (server and service)."""
        return "SCAF_NATS_PASSWORD_" + env_suffix(self.user)


def _js(subjects: Subjects, *apis: str) -> tuple[str, ...]:
    return tuple(f"$JS.API.{api}" for api in apis)


def kv_read(subjects: Subjects) -> tuple[str, ...]:
    kv = f"KV_{subjects.results_bucket}"
    return _js(subjects, f"STREAM.INFO.{kv}", f"STREAM.MSG.GET.{kv}", f"DIRECT.GET.{kv}", f"DIRECT.GET.{kv}.>")


def admin() -> Role:
    return Role("admin", Grant(publish=(">",), subscribe=(">",), responses=True), "creates streams/consumers; ops")


def gateway(subjects: Subjects) -> Role:
    """Submits jobs for any tenant (creating each job's ``queued`` record first: a job id is an
    idempotency key of its tenant), reads every job's events and record, cancels jobs, asks
    which methods (controllers) and backend models (workers) are served."""
    s = subjects
    return Role(
        "gateway",
        Grant(
            publish=(
                s.jobs(ANY),
                s.jobs(ANY, ANY),
                s.cancel_job_all,
                s.controller_methods,
                f"$KV.{s.results_bucket}.>",
                s.worker_models,
                *kv_read(s),
                *_js(s, f"STREAM.MSG.GET.{s.events_stream}"),
            ),
            subscribe=(s.events_all, inbox_prefix("gateway") + ".>"),
        ),
        "HTTP gateway",
    )


def controller(subjects: Subjects) -> Role:
    """Consumes jobs through the existing durable consumer, sends tasks, publishes events,
    writes records; creates nothing."""
    s = subjects
    jobs, consumer = s.jobs_stream, s.jobs_consumer
    return Role(
        "controller",
        Grant(
            publish=(
                s.tasks(ANY),
                s.task_queue(ANY),  # queue tasks (a JetStream publish; the PubAck comes to its inbox)
                s.cancel_task_all,
                s.task_final(ANY, ANY),  # ask for a final frame lost with a connection (finals)
                s.events_all,
                f"$KV.{s.results_bucket}.>",
                *kv_read(s),
                *_js(
                    s,
                    f"STREAM.INFO.{jobs}",
                    f"STREAM.INFO.{s.events_stream}",
                    f"STREAM.MSG.GET.{s.cancels_stream}",
                    f"CONSUMER.INFO.{jobs}.{consumer}",
                    f"CONSUMER.MSG.NEXT.{jobs}.{consumer}",
                    f"STREAM.MSG.GET.{jobs}",
                    f"STREAM.MSG.DELETE.{jobs}",
                    f"STREAM.MSG.GET.{s.events_stream}",  # a taken-over job's last event
                    f"CONSUMER.INFO.{s.tasks_stream}.{ANY}",  # is a tag served (its consumer exists)
                    f"STREAM.MSG.GET.{s.tasks_stream}",  # is a silent task still queued
                    f"STREAM.MSG.DELETE.{s.tasks_stream}",  # drop a cancelled queued task
                ),
                f"$JS.ACK.{jobs}.{consumer}.>",
                s.controller_owner_all,  # "does anyone still run this job?"
            ),
            subscribe=(
                s.cancel_job_all,
                s.controller_methods,
                s.controller_owner_all,
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{jobs}.{consumer}",
                SRV,
                inbox_prefix("controller") + ".>",
            ),
            responses=True,
        ),
        "controller service",
    )


def worker(subjects: Subjects, kind: str, tags: Iterable[str]) -> Role:
    """Pulls its own tags' queued tasks (and takes direct ones, only in their queue groups),
    acks them, and sends their frames to the controllers' inboxes (a queued task's
    ``Scaf-Reply-To``); reads its consumers' backlog; answers and asks its own tags' lookups of
    kept final frames; creates nothing."""
    s = subjects
    user = f"worker-{check_token(kind, 'worker kind')}"
    tags = tuple(tags)
    tasks = tuple(f"{s.tasks(tag)} {s.task_queue_group(tag)}" for tag in tags)
    finals = tuple(s.task_final(tag, ANY) for tag in tags)
    stream = s.tasks_stream
    queues = tuple(
        subject
        for tag in tags
        for subject in (
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{s.task_consumer(tag)}",
            f"$JS.API.CONSUMER.INFO.{stream}.{s.task_consumer(tag)}",
            f"$JS.ACK.{stream}.{s.task_consumer(tag)}.>",
        )
    )
    return Role(
        user,
        Grant(
            publish=(*queues, *finals, inbox_prefix("controller") + ".>"),
            subscribe=(*tasks, *finals, s.cancel_task_all, s.worker_models, SRV, inbox_prefix(user) + ".>"),
            responses=True,
        ),
        f"worker serving {', '.join(tags)}",
    )


def client(subjects: Subjects, name: str) -> Role:
    """A NATS client of its own: submits jobs as owner ``name``, reads and cancels only its own
    jobs (their subjects carry the owner), lists methods. No KV, no replay, no tasks."""
    s = subjects
    user = f"client-{check_token(name, 'client name')}"
    return Role(
        user,
        Grant(
            publish=(s.jobs(ANY, name), s.cancel_job(ANY, name), s.controller_methods),
            subscribe=(s.events(ANY, name), inbox_prefix(user) + ".>"),
        ),
        f"NATS client owning jobs as {name!r}",
    )


@dataclass(frozen=True)
class Deployment:
    """The roles of one deployment: which worker kinds serve which tags, and which clients."""

    subjects: Subjects = field(default_factory=Subjects)
    workers: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_WORKERS))
    clients: Sequence[str] = ()

    def roles(self) -> list[Role]:
        s = self.subjects
        return [
            admin(),
            gateway(s),
            controller(s),
            *(worker(s, kind, tags) for kind, tags in self.workers.items()),
            *(client(s, name) for name in self.clients),
        ]

    def role(self, user: str) -> Role:
        for role in self.roles():
            if role.user == user:
                return role
        raise KeyError(f"no NATS user {user!r} in this deployment (users: {[r.user for r in self.roles()]})")
