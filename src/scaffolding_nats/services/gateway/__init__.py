"""The HTTP gateway: an OpenAI-compatible API and a native jobs API over the bus."""

from .app import GatewaySettings, create_app

__all__ = ["GatewaySettings", "create_app"]
