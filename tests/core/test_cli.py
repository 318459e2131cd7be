"""Promises of the package: the console script works, ``--help`` names every environment
variable a service reads, and the declared Python is the one the code needs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "controller": ROOT / "src/scaffolding_nats/services/controller/__main__.py",
    "worker": ROOT / "src/scaffolding_nats/services/worker/__main__.py",
    "gateway": ROOT / "src/scaffolding_nats/services/gateway/__main__.py",
}


def _help(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "scaffolding_nats.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.split())


def test_console_script_points_at_a_real_cli() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, func = project["project"]["scripts"]["scaffolding-nats"].partition(":")
    assert module == "scaffolding_nats.cli" and func == "main"
    text = _help("--help")
    for command in ("run", "controller", "worker", "gateway", "schema"):
        assert command in text


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_help_names_every_environment_variable(service: str) -> None:
    sources = SERVICES[service].read_text() + (ROOT / "src/scaffolding_nats/services/_cli.py").read_text()
    wanted = set(re.findall(r"SCAF_[A-Z_]+", sources))
    text = _help(service, "--help").replace("- ", "-")
    missing = {name for name in wanted if name not in text}
    assert not missing, f"{service} --help does not name {sorted(missing)}"


def test_declared_python_is_the_one_the_code_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"].startswith(">=3.11")
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert sys.version_info >= (3, 11)
