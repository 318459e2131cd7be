"""Protocol version and size limits shared by every message on the bus."""

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change; receivers reject versions they do not know."""

SUPPORTED_VERSIONS = frozenset({1})

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's default max_payload; a message larger than this never reaches the bus."""

DEFAULT_MAX_TASK_BYTES = 900 * 1024
"""What a worker host accepts; kept under max_payload so the reply (which echoes no
inputs) always fits."""
