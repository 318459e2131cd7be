"""Who may do what: NATS roles and their permissions, server config, generated secrets."""

from .permissions import DEFAULT_WORKERS, Deployment, Grant, Role

__all__ = ["DEFAULT_WORKERS", "Deployment", "Grant", "Role"]
