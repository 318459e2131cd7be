"""``EventFollower`` lives in ``scaffolding_nats.jobs.follower``; this name stays importable."""

from .jobs.follower import EventFollower

__all__ = ["EventFollower"]
