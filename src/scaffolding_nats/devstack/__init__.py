"""Local processes for development, tests and the embedded default stack (no Docker)."""

from .nats_server import NatsServer, free_port

__all__ = ["NatsServer", "free_port"]
