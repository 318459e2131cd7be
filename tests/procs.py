"""Command lines for the services that tests start as real processes."""

from __future__ import annotations

import json
import sys
from typing import Any


def worker_argv(
    url: str, prefix: str, worker: str, *, tags: str | None = None, worker_args: dict[str, Any] | None = None
) -> list[str]:
    """``python -m scaffolding_nats.services.worker`` for one worker kind on a test's prefix."""
    argv = [sys.executable, "-m", "scaffolding_nats.services.worker", "--nats", url, "--prefix", prefix]
    argv += ["--worker", worker]
    if tags is not None:
        argv += ["--tags", tags]
    if worker_args is not None:
        argv += ["--worker-args", json.dumps(worker_args)]
    return argv
