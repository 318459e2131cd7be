"""``docker compose up`` as a user runs it, in a real engine: the README's commands, word for word.

Needs a Docker engine with compose v2 (``DOCKER_HOST`` or the default socket). Where there is
none the tests skip and say why; under ``CI=true`` they fail instead, so a landing never passes
without them (``.ci/run`` starts ``../shared/container/engine.sh`` where it exists).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scaffolding_nats.devstack import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "scaf-compose-test"  # not the user's own stack (compose.yaml's name: scaffolding-nats)
BUILD_TIMEOUT = 1500  # the first build compiles llama-server in the model-server image
UP_TIMEOUT = 300


def readme_commands() -> list[str]:
    """The shell lines of the README's "Docker Compose" block, which the tests run as given."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Docker Compose", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block, "README.md: no ```sh block under ## Docker Compose"
    lines = [ln.split("  #", 1)[0].strip() for ln in block.group(1).replace("\\\n", " ").splitlines()]
    return [ln for ln in lines if ln]


def engine_problem() -> str | None:
    """Why no engine can be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=20)  # fmt: skip
        if info.returncode != 0:
            return f"no Docker engine answers ({info.stderr.strip()[:200]})"
        version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer within 20 s"
    if version.returncode != 0:
        return "docker compose (v2) is not installed"
    return None


@dataclass
class ComposeStack:
    url: str
    key: str
    env: dict[str, str]

    def sh(self, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            pytest.fail(f"`{command}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.sh("docker compose " + " ".join(args), timeout=timeout, check=check)

    def client(self, timeout: float = 300) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=timeout)

    def containers(self) -> list[dict[str, str]]:
        out = self.compose("ps", "--all", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            rows: list[dict[str, str]] = json.loads(out)
            return rows
        return [json.loads(line) for line in out.splitlines()]

    def wait_healthy(self, timeout: float = UP_TIMEOUT) -> None:
        """Every long-running service up (and healthy where it has a check); bounded."""
        deadline = time.monotonic() + timeout
        state: list[tuple[str, str, str]] = []
        while time.monotonic() < deadline:
            state = [(c["Service"], c["State"], c.get("Health", "")) for c in self.containers()]
            running = [s for s in state if s[0] != "nats-init"]
            if running and all(st == "running" and health in ("", "healthy") for _, st, health in running):
                return
            time.sleep(2)
        pytest.fail(f"stack not healthy after {timeout}s: {state}")

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", service, check=False).stdout


def _api_key(env_file: Path) -> str:
    for line in env_file.read_text().splitlines():
        name, _, value = line.partition("=")
        if name == "SCAF_API_KEYS":
            tenant, _, key = value.strip().strip("'\"").partition(" ")
            if tenant == "local":
                return key
    raise AssertionError(f"{env_file}: no SCAF_API_KEYS=local line")


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeStack]:
    problem = engine_problem()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the compose tests, but: {problem} (run ../shared/container/engine.sh up)")
        pytest.skip(f"compose tests need a Docker engine: {problem}")
    port = free_port()
    env = {**os.environ, "COMPOSE_PROJECT_NAME": PROJECT, "SCAF_GATEWAY_PORT": str(port)}
    commands = readme_commands()
    assert commands[0] == "make compose-secrets" and commands[1] == "docker compose up --build --wait", commands
    s = ComposeStack(url=f"http://127.0.0.1:{port}", key="", env=env)
    s.compose("down", "-v", "--remove-orphans", timeout=120, check=False)  # a run cut short before
    try:
        s.sh(commands[0], timeout=300)
        s.key = _api_key(ROOT / ".env")
        # The README's `up --build --wait`, split in two so that each step's time and failure
        # is its own: build every image, then start and wait for health.
        s.compose("build", timeout=BUILD_TIMEOUT)
        up = s.sh(commands[1], timeout=UP_TIMEOUT, check=False)
        if up.returncode != 0:
            pytest.fail(
                f"`{commands[1]}` exited {up.returncode}:\n{up.stderr[-3000:]}\n"
                + "\n".join(f"--- {name}\n{s.logs(name)}" for name in ("model-server", "controller", "gateway"))
            )
        s.wait_healthy()
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", timeout=180, check=False)
