"""``JobClient`` lives in ``scaffolding_nats.jobs.client``; this name stays importable."""

from .jobs.client import JobClient
from .proto.errors import NoController

__all__ = ["JobClient", "NoController"]
