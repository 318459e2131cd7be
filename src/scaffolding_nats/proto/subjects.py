"""Subject names, queue groups, stream/bucket names and headers, defined in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")

HEADER_TRACEPARENT = "traceparent"
HEADER_MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication of jobs
HEADER_SERVICE_ERROR = "Nats-Service-Error"
HEADER_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"


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

    def controller_owner(self, job_id: str) -> str:
        """Request-reply: the controller running ``job_id`` answers (nobody does once it died)."""
        return f"{self.prefix}.controllers.owner.{job_id}"

    @property
    def controller_owner_all(self) -> str:
        return f"{self.prefix}.controllers.owner.*"

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
