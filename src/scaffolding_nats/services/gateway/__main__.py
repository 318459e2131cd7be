"""Run the gateway: ``python -m scaffolding_nats.services.gateway --port 8000``."""

from __future__ import annotations

import logging
import os

import uvicorn

from .._cli import base_parser
from .app import GatewaySettings, create_app
from .auth import KeyStore


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = base_parser(__doc__)
    p.add_argument("--host", default=env("SCAF_GATEWAY_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("SCAF_GATEWAY_PORT", "8000")))
    p.add_argument("--request-timeout", type=float, default=float(env("SCAF_REQUEST_TIMEOUT", "600")))
    p.add_argument("--api-keys-file", default=env("SCAF_API_KEYS_FILE"), help="tenant/key lines (see gateway/auth.py)")
    p.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=env("SCAF_ALLOW_ANONYMOUS", "") in ("1", "true"),
        help="serve /v1 without API keys (one shared tenant); never on a reachable port",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=env("SCAF_LOG_LEVEL", "INFO"))
    keys = KeyStore.load(file=args.api_keys_file, inline=env("SCAF_API_KEYS"))
    if not keys and not args.allow_anonymous:
        p.error("no API keys: set SCAF_API_KEYS_FILE or SCAF_API_KEYS (or --allow-anonymous for a private gateway)")
    app = create_app(
        GatewaySettings(
            nats_url=args.nats,
            prefix=args.prefix,
            request_timeout=args.request_timeout,
            api_keys=keys,
            allow_anonymous=args.allow_anonymous,
        )
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=env("SCAF_LOG_LEVEL", "info").lower(),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
