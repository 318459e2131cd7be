"""Secrets generated on first use and kept in a 0600 env file (``NAME=value`` lines), never in
the repository: the NATS passwords of every role and the gateway's API keys."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[name.strip()] = value.strip()
    return values


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, mode 0600, rewritten in place (same inode: a file that compose
    bind-mounts into a container shows the new text there too)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def write_env_file(path: Path, values: dict[str, str]) -> None:
    write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))


def new_secret() -> str:
    """A letter then 40 hex digits: nats-server parses a password taken from its environment as
    a config value, so it must not look like a number, a date or a boolean."""
    return "s" + secrets.token_hex(20)


def load_or_create(path: Path, names: Iterable[str]) -> dict[str, str]:
    """The values of ``names`` from ``path``, generating (and saving) any that are missing."""
    values = read_env_file(path)
    missing = [n for n in names if not values.get(n)]
    if missing:
        for name in missing:
            values[name] = new_secret()
        write_env_file(path, values)
    return values
