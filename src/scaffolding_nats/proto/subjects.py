"""Subject names, queue groups, stream/bucket names and headers, defined in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ProtocolError

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


class InvalidToken(ProtocolError, ValueError):
    """An id or name that cannot be one subject token."""


HEADER_TRACEPARENT = "traceparent"
HEADER_MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication of jobs, events and queued tasks
HEADER_SERVICE_ERROR = "Nats-Service-Error"
HEADER_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"
HEADER_REPLY_TO = "Scaf-Reply-To"  # a queued task's frames go here (a JetStream message's reply is its ack)
HEADER_ATTEMPTS_BELOW = "Scaf-Attempts-Below"  # a task cancel that only stops attempts before this one


def check_token(value: str, what: str) -> str:
    """Subject tokens may not contain dots, wildcards or spaces (``InvalidToken``, a
    ``ValueError`` and an ``invalid`` ScaffoldingError, otherwise)."""
    if not isinstance(value, str) or not _TOKEN.match(value) or len(value) > 128:
        raise InvalidToken(f"{what} {value!r} is not a valid subject token ([A-Za-z0-9_-]{{1,128}})")
    return value


ANY = "*"
"""A one-token wildcard, accepted where a subject is built for a permission or a subscription."""


def _token(value: str, what: str) -> str:
    return value if value == ANY else check_token(value, what)


def _owned(job_id: str, owner: str | None) -> str:
    if owner is None:
        return check_token(job_id, "job id")
    return f"{_token(owner, 'owner')}.{_token(job_id, 'job id')}"


def job_key(job_id: str, owner: str | None = None) -> str:
    """A job's identity on the bus: ``<owner>.<id>`` for an owned job, ``<id>`` for one
    without an owner. It is the job's de-duplication id (``Nats-Msg-Id``), its results-bucket
    key and the tail of its events, cancel and owner-question subjects, so two owners' jobs
    never share one, whatever ids they choose. (An owner-less key has no dot, an owned one
    exactly one: the two kinds cannot collide either.) Both must be real tokens: no wildcard."""
    check_token(job_id, "job id")
    return job_id if owner is None else f"{check_token(owner, 'owner')}.{job_id}"


def inbox_prefix(user: str) -> str:
    """The private reply-subject prefix of a NATS user: only that user may subscribe to it."""
    return f"_INBOX_{check_token(user, 'user')}"


@dataclass(frozen=True)
class Subjects:
    """All names derived from one prefix, so two deployments can share a server."""

    prefix: str = "scaf"

    def __post_init__(self) -> None:
        for part in self.prefix.split("."):
            check_token(part, "prefix part")

    def tasks(self, worker_tag: str) -> str:
        return f"{self.prefix}.tasks.{_token(worker_tag, 'worker tag')}"

    def task_queue_group(self, worker_tag: str) -> str:
        return f"{self.prefix}-workers-{worker_tag}"

    def task_queue(self, worker_tag: str) -> str:
        """Where controllers queue a tag's tasks (stored in the tasks stream, pulled by workers)."""
        return f"{self.prefix}.queue.{_token(worker_tag, 'worker tag')}"

    @property
    def task_queue_all(self) -> str:
        return f"{self.prefix}.queue.*"

    @property
    def tasks_stream(self) -> str:
        return f"{self._name}_TASKS"

    def task_consumer(self, worker_tag: str) -> str:
        """The durable pull consumer a tag's replicas share (KEDA reads its backlog)."""
        return f"{self._name}_TASKS_{_token(worker_tag, 'worker tag')}"

    def task_pull(self, worker_tag: str) -> str:
        """The JetStream API subject a worker sends its pull requests to."""
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.tasks_stream}.{self.task_consumer(worker_tag)}"

    def cancel_task(self, task_id: str) -> str:
        return f"{self.prefix}.cancel.task.{check_token(task_id, 'task id')}"

    @property
    def cancel_task_all(self) -> str:
        return f"{self.prefix}.cancel.task.*"

    def task_final(self, worker_tag: str, task_id: str) -> str:
        """Request: the replica of the tag that kept the task's final frame sends it again
        (body: the task's ``Scaf-Reply-To`` inbox; see ``transport.finals``)."""
        return f"{self.prefix}.final.{_token(worker_tag, 'worker tag')}.{_token(task_id, 'task id')}"

    # A job may carry an *owner* (a NATS client role, or a gateway tenant): its subjects then
    # end in ``<owner>`` / start with ``<owner>.``, so NATS permissions can confine a client to
    # its own jobs' events and cancels. Jobs without an owner keep the one-token form.

    def jobs(self, method: str, owner: str | None = None) -> str:
        base = f"{self.prefix}.jobs.{_token(method, 'method')}"
        return base if owner is None else f"{base}.{_token(owner, 'owner')}"

    @property
    def jobs_all(self) -> str:
        return f"{self.prefix}.jobs.>"

    def events(self, job_id: str, owner: str | None = None) -> str:
        """Ids from clients and URLs are checked: ``*`` or ``a.b`` must not widen a subscription
        (``ANY`` is for permissions, which name an owner)."""
        return f"{self.prefix}.events.{_owned(job_id, owner)}"

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.>"

    def cancel_job(self, job_id: str, owner: str | None = None) -> str:
        return f"{self.prefix}.cancel.job.{_owned(job_id, owner)}"

    @property
    def cancel_job_all(self) -> str:
        return f"{self.prefix}.cancel.job.>"

    def split_job_subject(self, subject: str) -> tuple[str, str | None] | None:
        """``(method, owner)`` of a jobs subject, or None when it is not one."""
        head = f"{self.prefix}.jobs."
        if not subject.startswith(head):
            return None
        parts = subject[len(head) :].split(".")
        if len(parts) == 1:
            return parts[0], None
        if len(parts) == 2:
            return parts[0], parts[1]
        return None

    def split_cancel_job(self, subject: str) -> tuple[str, str | None]:
        """``(job_id, owner)`` of a job-cancel subject."""
        rest = subject[len(f"{self.prefix}.cancel.job.") :]
        owner, _, job_id = rest.rpartition(".")
        return job_id, owner or None

    @property
    def controller_methods(self) -> str:
        """Request-reply: a controller answers with the names of the methods it serves."""
        return f"{self.prefix}.controllers.methods"

    @property
    def worker_models(self) -> str:
        """Request with many replies: every worker replica answers with its tags, the task
        kinds it handles and the backend models it serves (how a gateway learns which exist)."""
        return f"{self.prefix}.workers.models"

    def controller_owner(self, job_id: str, owner: str | None = None) -> str:
        """Request-reply: the controller running the job answers (nobody does once it died)."""
        return f"{self.prefix}.controllers.owner.{_owned(job_id, owner)}"

    @property
    def controller_owner_all(self) -> str:
        return f"{self.prefix}.controllers.owner.>"

    def owner_question_key(self, subject: str) -> str:
        """The job key a ``controller_owner`` subject asks about."""
        return subject[len(f"{self.prefix}.controllers.owner.") :]

    @property
    def controller_service(self) -> str:
        """The NATS micro service name of controllers (``$SRV.PING.<name>`` finds them)."""
        return f"{self._name.lower()}-controller"

    @property
    def _name(self) -> str:
        return self.prefix.replace(".", "_").upper()

    @property
    def jobs_stream(self) -> str:
        return f"{self._name}_JOBS"

    @property
    def jobs_consumer(self) -> str:
        return f"{self._name}_CONTROLLERS"

    @property
    def cancels_stream(self) -> str:
        """Keeps each job's last cancel, so a cancel sent while no controller runs is not lost."""
        return f"{self._name}_CANCELS"

    @property
    def events_stream(self) -> str:
        return f"{self._name}_EVENTS"

    @property
    def results_bucket(self) -> str:
        return f"{self._name}_RESULTS"
