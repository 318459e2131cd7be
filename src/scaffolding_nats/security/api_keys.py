"""The gateway's API-key lines, the one place their format is read and written::

    # tenant   key (or sha256:<hex of the key>)   [rpm=<requests per minute>] [concurrency=<n>]
    acme       sk-scaf-3f9c...                     rpm=600 concurrency=8

``;`` separates lines too (for one environment variable); ``#`` starts a comment. Written by
``python -m scaffolding_nats.security api-key``/``secrets`` and by ``make run``; read by the
gateway (``services/gateway/auth.py``) and by ``make run``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ..proto.subjects import check_token


class KeyFileError(ValueError):
    """A line of the API key file that cannot be read (its number and why)."""


@dataclass(frozen=True)
class KeyLine:
    tenant: str
    key: str  # the key, or ``sha256:<hex of the key>``
    rpm: float | None = None
    concurrency: int | None = None


def new_key() -> str:
    return "sk-scaf-" + secrets.token_urlsafe(24)


def key_line(tenant: str, key: str) -> str:
    """One line that gives ``tenant`` the key ``key`` (no limits)."""
    return f"{check_token(tenant, 'tenant')} {key}"


def parse_key_lines(text: str, *, source: str = "<keys>") -> list[KeyLine]:
    """Every key line in ``text``; KeyFileError names the first bad one (``source:number``)."""
    lines = []
    for number, raw in enumerate(text.replace(";", "\n").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tenant, key, *opts = line.split()
        rpm: float | None = None
        concurrency: int | None = None
        for opt in opts:
            name, _, value = opt.partition("=")
            if name == "rpm":
                rpm = float(value)
            elif name == "concurrency":
                concurrency = int(value)
            else:
                raise KeyFileError(f"{source}:{number}: unknown option {name!r} (rpm=, concurrency=)")
        try:
            check_token(tenant, "tenant")
        except ValueError as exc:
            raise KeyFileError(f"{source}:{number}: {exc}") from None
        lines.append(KeyLine(tenant, key, rpm=rpm, concurrency=concurrency))
    return lines
