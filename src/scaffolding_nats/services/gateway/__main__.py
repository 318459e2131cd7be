"""Run the gateway: ``python -m scaffolding_nats.services.gateway --port 8000``."""

from __future__ import annotations

import logging
import os

import uvicorn

from ...telemetry import configure_from_env
from .._cli import base_parser, setting
from .app import GatewaySettings, create_app
from .auth import KeyStore


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = base_parser(__doc__)
    setting(p, "--host", "SCAF_GATEWAY_HOST", "127.0.0.1", "HTTP listen address")
    setting(p, "--port", "SCAF_GATEWAY_PORT", "8000", "HTTP port", type=int)
    setting(p, "--request-timeout", "SCAF_REQUEST_TIMEOUT", "600", "longest wait for one job", type=float)
    setting(p, "--max-body-bytes", "SCAF_MAX_BODY_BYTES", str(1 << 20), "largest request body (413 above)", type=int)
    setting(p, "--api-keys-file", "SCAF_API_KEYS_FILE", "", "tenant/key lines (see gateway/auth.py); or SCAF_API_KEYS")
    p.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=env("SCAF_ALLOW_ANONYMOUS", "") in ("1", "true"),
        help="serve /v1 without API keys (one shared tenant); never on a reachable port [env SCAF_ALLOW_ANONYMOUS=1]",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=env("SCAF_LOG_LEVEL", "INFO"))
    configure_from_env("scaffolding-gateway")  # spans per request, joined to the job's across services
    keys = KeyStore.load(file=args.api_keys_file or None, inline=env("SCAF_API_KEYS"))
    if not keys and not args.allow_anonymous:
        p.error("no API keys: set SCAF_API_KEYS_FILE or SCAF_API_KEYS (or --allow-anonymous for a private gateway)")
    app = create_app(
        GatewaySettings(
            nats_url=args.nats,
            prefix=args.prefix,
            request_timeout=args.request_timeout,
            max_body_bytes=args.max_body_bytes,
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
