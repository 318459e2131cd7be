"""The NATS seam: ``RemoteWorker`` sends tasks, ``WorkerHost`` serves a Worker."""

from .connect import connect
from .host import WorkerHost
from .remote import RemoteWorker

__all__ = ["RemoteWorker", "WorkerHost", "connect"]
