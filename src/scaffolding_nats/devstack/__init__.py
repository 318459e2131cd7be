"""Local processes for development, tests and the embedded default stack (no Docker)."""

from .model_files import ModelNotAvailable, resolve_model
from .model_server import ModelServer
from .nats_cluster import NatsCluster
from .nats_server import NatsServer, free_port

__all__ = ["ModelNotAvailable", "ModelServer", "NatsCluster", "NatsServer", "free_port", "resolve_model"]
