"""nats-server running the checked-in ``k8s/nats/server.conf`` (compose's and k8s's), as those
deployments run it, with only its ports and store moved to free ones in a temporary folder."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scaffolding_nats.devstack.nats_server import find_binary, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Layout:
    conf_dir: Path  # /etc/nats: server.conf, and auth.conf for the test to write
    port: int
    http_port: int

    @property
    def auth_file(self) -> Path:
        return self.conf_dir / "auth.conf"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def prepare(tmp: Path) -> Layout:
    layout = Layout(tmp / "etc-nats", free_port(), free_port())
    layout.conf_dir.mkdir()
    text = (ROOT / "k8s" / "nats" / "server.conf").read_text()
    for old, new in [
        (r"^port: 4222$", f"port: {layout.port}"),
        (r"\b8222\b", str(layout.http_port)),  # whatever host the file binds monitoring to stays
        (r"store_dir: /data", f'store_dir: "{tmp / "data"}"'),
    ]:
        text, count = re.subn(old, new, text, flags=re.MULTILINE)
        assert count, f"server.conf no longer has {old!r}"
    (layout.conf_dir / "server.conf").write_text(text)
    return layout


@contextmanager
def running(layout: Layout, env: dict[str, str], timeout: float = 10) -> Iterator[subprocess.Popen[bytes]]:
    """The server with ``env`` as its whole environment (compose's ``environment``, k8s's Secret)."""
    log = layout.conf_dir.parent / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([find_binary(), "-c", str(layout.conf_dir / "server.conf")], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        for port in (layout.http_port, layout.port):
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    assert time.monotonic() < deadline, f"not listening on {port} in {timeout}s:\n{log.read_text()}"
                    time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
