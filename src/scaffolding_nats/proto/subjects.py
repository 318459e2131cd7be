"""Subject names, queue groups, stream/bucket names and headers, defined in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ProtocolError

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")

class InvalidToken(ProtocolError, ValueError):
    """An id or name that cannot be one subject token."""


HEADER_TRACEPARENT = "traceparent"
HEADER_MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication of jobs
HEADER_SERVICE_ERROR = "Nats-Service-Error"
HEADER_SERVICE_ERROR_CODE = "Nats-Service-Error-Code"


def check_token(value: str, what: str) -> str:
    """Subject tokens may not contain dots, wildcards or spaces (``InvalidToken``, a
    ``ValueError`` and an ``invalid`` ScaffoldingError, otherwise)."""
    if not isinstance(value, str) or not _TOKEN.match(value) or len(value) > 128:
        raise InvalidToken(f"{what} {value!r} is not a valid subject token ([A-Za-z0-9_-]{{1,128}})")
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
        return f"{self.prefix}.cancel.task.{check_token(task_id, 'task id')}"

    @property
    def cancel_task_all(self) -> str:
        return f"{self.prefix}.cancel.task.*"

    def jobs(self, method: str) -> str:
        return f"{self.prefix}.jobs.{check_token(method, 'method')}"

    @property
    def jobs_all(self) -> str:
        return f"{self.prefix}.jobs.*"

    def events(self, job_id: str) -> str:
        """Ids from clients and URLs are checked: ``*`` or ``a.b`` must not widen a subscription."""
        return f"{self.prefix}.events.{check_token(job_id, 'job id')}"

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.*"

    def cancel_job(self, job_id: str) -> str:
        return f"{self.prefix}.cancel.job.{check_token(job_id, 'job id')}"

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
