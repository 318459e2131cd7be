"""A local NATS cluster: three (or more) ``nats-server`` processes joined by routes, with a
replicated JetStream, for ``make run CLUSTER=3`` and for failover tests."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats

from ..security.permissions import Deployment
from ._lifecycle import Managed
from .nats_server import NatsServer, free_port


class NatsCluster(Managed):
    """``size`` nodes on loopback, each with its own store under ``store_dir``; every node routes
    to every other. ``start()`` returns once JetStream has a meta leader (streams can be made).
    Clients connect on ``base_port``, ``base_port + 1``, ... (free ports by default).

    Node ``i`` is named ``n<i>``: the name JetStream reports as a stream's leader. Every node
    includes the one ``auth_file`` and writes ``pid_dir/nats-server-n<i>.pid`` (see
    ``NatsServer``), so one ``add-identity`` reaches them all."""

    def __init__(
        self,
        size: int = 3,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        base_port: int | None = None,
        ready_timeout: float = 30.0,
        auth: bool = True,
        deployment: Deployment | None = None,
        secrets_file: str | os.PathLike[str] | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        pid_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scaf-nats-cluster-")
            store_dir = self._tmp.name
        root = Path(store_dir)
        # Every node has the same users: their passwords are made once and shared through a file.
        secrets = Path(secrets_file) if secrets_file is not None else root / "secrets.env"
        self.ready_timeout = ready_timeout
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = []
        for i, port in enumerate(cluster_ports):
            (root / f"n{i}").mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                NatsServer(
                    port=None if base_port is None else base_port + i,
                    store_dir=root / f"n{i}",
                    server_name=f"n{i}",
                    cluster_port=port,
                    routes=[f"nats://127.0.0.1:{p}" for p in cluster_ports if p != port],
                    log_file=root / f"n{i}.log",
                    auth=auth,
                    deployment=deployment,
                    secrets_file=secrets,
                    auth_file=auth_file,
                    pid_file=None if pid_dir is None else Path(pid_dir) / f"nats-server-n{i}.pid",
                )
            )

    @property
    def urls(self) -> list[str]:
        """Every node's admin URL (credentials included when auth is on)."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's admin URL, comma-separated."""
        return ",".join(self.urls)

    @property
    def bare_url(self) -> str:
        """Every node's URL without credentials, comma-separated: what ``SCAF_NATS_URL`` takes."""
        return ",".join(node.bare_url for node in self.nodes)

    @property
    def passwords(self) -> dict[str, str]:
        return self.nodes[0].passwords

    def url_for(self, user: str) -> str:
        return ",".join(node.url_for(user) for node in self.nodes)

    def env_for(self, user: str) -> dict[str, str]:
        """What a service process needs to log in as ``user`` on any node."""
        return {**self.nodes[0].env_for(user), "SCAF_NATS_URL": self.bare_url}

    async def connect(self, user: str = "admin", **options: Any) -> Any:
        """A connection as ``user`` that fails over between the nodes."""
        from ..transport.connect import connect

        options.setdefault("max_reconnect_attempts", 0)
        first = self.nodes[0]
        servers = [node.bare_url for node in self.nodes]
        if not first.auth:
            return await connect(servers, name=user, **options)
        return await connect(servers, name=user, user=user, password=first.passwords[user], **options)

    def node(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if n.server_name == name)

    def start(self) -> NatsCluster:
        try:
            for node in self.nodes:
                if node.proc is None:
                    node.start()
            # In a thread of its own: ``start()`` may be called from inside an event loop.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, self.wait_jetstream(self.ready_timeout)).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def wait_jetstream(self, timeout: float) -> None:
        """Until JetStream answers through every running node (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.proc is None:
                continue
            nc = await node.connect("admin")
            try:
                while True:
                    try:
                        reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                        if "error" not in json.loads(reply.data):
                            break
                    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"JetStream on the cluster not ready in {timeout}s")
                    await asyncio.sleep(0.2)
            finally:
                await nc.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
