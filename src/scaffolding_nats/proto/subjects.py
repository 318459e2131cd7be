"""Subject names, queue groups, stream/bucket names and headers, defined in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")

HEADER_TRACEPARENT = "traceparent"
HEADER_MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication of jobs
HEADER_SERVICE_ERROR = "Nats-Service-Error"
HEADER_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"
HEADER_REPLY_TO = "Scaf-Reply-To"  # a queued task's frames go here (a JetStream message's reply is its ack)
HEADER_ATTEMPTS_BELOW = "Scaf-Attempts-Below"  # a task cancel that only stops attempts before this one


def check_token(value: str, what: str) -> str:
    """Subject tokens may not contain dots, wildcards or spaces."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} is not a valid subject token ([A-Za-z0-9_-]+)")
    return value


@dataclass(frozen=True)
class Subjects:
    """All names derived from one prefix, so two deployments can share a server."""

    prefix: str = "scaf"

    def __post_init__(self) -> None:
        for part in self.prefix.split("."):
            check_token(part, "prefix part")

    def tasks(self, worker_tag: str) -> str:
        return f"{self.prefix}.tasks.{check_token(worker_tag, 'worker tag')}"

    def task_queue_group(self, worker_tag: str) -> str:
        return f"{self.prefix}-workers-{worker_tag}"

    def task_queue(self, worker_tag: str) -> str:
        """Where controllers queue a tag's tasks (stored in the tasks stream, pulled by workers)."""
        return f"{self.prefix}.queue.{check_token(worker_tag, 'worker tag')}"

    @property
    def task_queue_all(self) -> str:
        return f"{self.prefix}.queue.*"

    @property
    def tasks_stream(self) -> str:
        return f"{self._name}_TASKS"

    def task_consumer(self, worker_tag: str) -> str:
        """The durable pull consumer a tag's replicas share (KEDA reads its backlog)."""
        return f"{self._name}_TASKS_{check_token(worker_tag, 'worker tag')}"

    def task_pull(self, worker_tag: str) -> str:
        """The JetStream API subject a worker sends its pull requests to."""
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.tasks_stream}.{self.task_consumer(worker_tag)}"

    def cancel_task(self, task_id: str) -> str:
        return f"{self.prefix}.cancel.task.{task_id}"

    @property
    def cancel_task_all(self) -> str:
        return f"{self.prefix}.cancel.task.*"

    def jobs(self, method: str) -> str:
        return f"{self.prefix}.jobs.{check_token(method, 'method')}"

    @property
    def jobs_all(self) -> str:
        return f"{self.prefix}.jobs.*"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}.events.{job_id}"

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.*"

    def cancel_job(self, job_id: str) -> str:
        return f"{self.prefix}.cancel.job.{job_id}"

    @property
    def cancel_job_all(self) -> str:
        return f"{self.prefix}.cancel.job.*"

    @property
    def controller_methods(self) -> str:
        """Request-reply: a controller answers with the names of the methods it serves."""
        return f"{self.prefix}.controllers.methods"

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
    def events_stream(self) -> str:
        return f"{self._name}_EVENTS"

    @property
    def results_bucket(self) -> str:
        return f"{self._name}_RESULTS"
