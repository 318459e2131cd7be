"""The system as real service processes on a running nats-server (or cluster), for fault
tests and benchmarks: each ``python -m scaffolding_nats.services.*`` logs in as its own NATS
role on one subject prefix, logs to a file, and is stopped (SIGTERM, then SIGKILL) at the end.
One place builds their command lines and environments, so fault tests and benchmarks kill and
measure the same processes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .run import Service


class Bus(Protocol):
    """A NatsServer or a NatsCluster: how a service logs in as a role."""

    def env_for(self, user: str) -> dict[str, str]: ...


class ServiceProcs:
    """Service processes started on ``prefix``, in order; ``env``: extra environment for all."""

    def __init__(self, log_dir: Path, prefix: str, env: Mapping[str, str] | None = None) -> None:
        self.log_dir, self.prefix = log_dir, prefix
        self.env = dict(env or {})
        self.started: list[Service] = []

    def start(self, name: str, args: list[str], bus: Bus, user: str) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCAF_NATS_")}
        env |= {**bus.env_for(user), "SCAF_PREFIX": self.prefix, "PYTHONUNBUFFERED": "1", **self.env}
        service = Service(name, args, self.log_dir, env)
        self.started.append(service)
        return service

    def worker(
        self,
        bus: Bus,
        *,
        latency: float,
        name: str = "worker",
        runs_log: Path | None = None,
        max_concurrency: int = 1024,
    ) -> Service:
        """The synthetic worker (fixed latency, checkable answers); ``runs_log``: a file that
        gets a line (the task id) per task run to its end."""
        args = json.dumps({"latency_s": latency} | ({"runs_log": str(runs_log)} if runs_log else {}))
        cmd = ["scaffolding_nats.services.worker", "--worker", "synthetic", "--worker-args", args]
        # The synthetic worker serves "generation", as the openai worker's role may.
        return self.start(name, [*cmd, "--max-concurrency", str(max_concurrency)], bus, "worker-openai")

    def controller(self, bus: Bus, *, name: str = "controller", max_jobs: int = 200) -> Service:
        cmd = ["scaffolding_nats.services.controller", "--max-jobs", str(max_jobs)]
        return self.start(name, cmd, bus, "controller")

    def wait_ready(self, timeout: float = 60) -> None:
        for service in self.started:
            service.wait_ready(timeout)

    def stop(self) -> None:
        for service in self.started:
            service.stop()

    def __enter__(self) -> ServiceProcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
