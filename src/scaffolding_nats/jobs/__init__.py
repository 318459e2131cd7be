"""The job side: submitting and following jobs (``JobClient``, ``EventFollower``), and what a
controller needs to run them (``JobStore``, ``EventStream``, ``HeldJobs``, failover), as
``transport/`` is for tasks.

``JobStore`` alone knows how a job is kept: its record's key, kept cancels, whose it is, and
which events end it (``TERMINAL``).
"""

from . import intake
from .client import JobClient
from .events import EventStream
from .follower import EventFollower
from .held import HeldJobs
from .store import TERMINAL, JobStore, is_terminal, visible

__all__ = [
    "TERMINAL",
    "EventFollower",
    "EventStream",
    "HeldJobs",
    "JobClient",
    "JobStore",
    "intake",
    "is_terminal",
    "visible",
]
