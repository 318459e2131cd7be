"""A NATS connection with the options every service wants, and its credentials.

Credentials come from the arguments or the environment: ``SCAF_NATS_USER`` and
``SCAF_NATS_PASSWORD`` (or ``SCAF_NATS_PASSWORD_FILE``, e.g. a mounted Secret), or an nkey
seed ``SCAF_NATS_NKEY_SEED`` (or ``SCAF_NATS_NKEY_SEED_FILE``; needs the ``nkeys`` package,
``pip install 'nats-py[nkeys]'``; ``SCAF_NATS_USER`` then names only the inbox), or a
``SCAF_NATS_CREDS`` creds file (nkeys/JWT). A user gets its private inbox prefix
(``_INBOX_<user>``), the only reply subjects its permissions let it read. ``SCAF_NATS_TLS_CA``
(and ``SCAF_NATS_TLS_CERT``/``SCAF_NATS_TLS_KEY`` for mutual TLS) turn TLS on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from ..proto.subjects import inbox_prefix

log = logging.getLogger(__name__)


_CREDENTIALS = ("user", "password", "user_credentials", "nkeys_seed", "nkeys_seed_str")


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)


def credentials_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """nats-py connect options for the credentials and TLS settings in ``env``."""
    e = os.environ if env is None else env
    options: dict[str, Any] = {}
    user = e.get("SCAF_NATS_USER")
    seed, seed_file = e.get("SCAF_NATS_NKEY_SEED"), e.get("SCAF_NATS_NKEY_SEED_FILE")
    if seed or seed_file:
        options |= {"nkeys_seed_str": seed} if seed else {"nkeys_seed": seed_file}
        if user:  # the nkey logs in; the user's name gives only its inbox prefix
            options["inbox_prefix"] = inbox_prefix(user)
    elif user:
        password = e.get("SCAF_NATS_PASSWORD")
        if not password and e.get("SCAF_NATS_PASSWORD_FILE"):
            password = Path(e["SCAF_NATS_PASSWORD_FILE"]).read_text().strip()
        if not password:
            raise ValueError(f"SCAF_NATS_USER={user} but neither SCAF_NATS_PASSWORD nor SCAF_NATS_PASSWORD_FILE is set")
        options |= {"user": user, "password": password}
    if e.get("SCAF_NATS_CREDS"):
        options["user_credentials"] = e["SCAF_NATS_CREDS"]
    if e.get("SCAF_NATS_TLS_CA"):
        context = ssl.create_default_context(cafile=e["SCAF_NATS_TLS_CA"])
        if e.get("SCAF_NATS_TLS_CERT"):
            context.load_cert_chain(e["SCAF_NATS_TLS_CERT"], e.get("SCAF_NATS_TLS_KEY"))
        options["tls"] = context
    return options


async def connect(
    servers: str | list[str] = "nats://127.0.0.1:4222", *, name: str = "scaffolding", **options: Any
) -> Client:
    """Connect with reconnects on, errors logged (a slow consumer is reported, not silent),
    and the environment's credentials unless ``user``/``password`` are given."""
    from_env = credentials_from_env()
    if any(k in options for k in _CREDENTIALS):  # given credentials win over the environment
        from_env = {k: v for k, v in from_env.items() if k not in (*_CREDENTIALS, "inbox_prefix")}
    for key, value in from_env.items():
        options.setdefault(key, value)
    if ("nkeys_seed" in options or "nkeys_seed_str" in options) and importlib.util.find_spec("nkeys") is None:
        raise ValueError("an nkey seed (SCAF_NATS_NKEY_SEED) needs the nkeys package: pip install 'nats-py[nkeys]'")
    if options.get("user"):
        options.setdefault("inbox_prefix", inbox_prefix(options["user"]))
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("connect_timeout", 5)
    options.setdefault("error_cb", _log_error)
    return await nats.connect(servers, name=name, **options)
