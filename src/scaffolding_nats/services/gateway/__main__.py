"""Run the gateway: ``python -m scaffolding_nats.services.gateway --port 8000``."""

from __future__ import annotations

import logging
import os

import uvicorn

from ...telemetry import configure_from_env
from .._cli import base_parser, setting
from .app import GatewaySettings, create_app


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = base_parser(__doc__)
    setting(p, "--host", "SCAF_GATEWAY_HOST", "127.0.0.1", "HTTP listen address")
    setting(p, "--port", "SCAF_GATEWAY_PORT", "8000", "HTTP port", type=int)
    setting(p, "--request-timeout", "SCAF_REQUEST_TIMEOUT", "600", "longest wait for one job", type=float)
    setting(p, "--max-body-bytes", "SCAF_MAX_BODY_BYTES", str(1 << 20), "largest request body (413 above)", type=int)
    args = p.parse_args(argv)
    logging.basicConfig(level=env("SCAF_LOG_LEVEL", "INFO"))
    configure_from_env("scaffolding-gateway")  # spans per request, joined to the job's across services
    app = create_app(
        GatewaySettings(
            nats_url=args.nats,
            prefix=args.prefix,
            request_timeout=args.request_timeout,
            max_body_bytes=args.max_body_bytes,
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
