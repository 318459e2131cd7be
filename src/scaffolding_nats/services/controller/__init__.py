"""The controller service: takes jobs from the durable queue and runs their methods, sending
every task to the workers over NATS and publishing the job's events."""

from .service import ControllerService

__all__ = ["ControllerService"]
