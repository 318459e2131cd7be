"""Run the gateway: ``python -m scaffolding_nats.services.gateway --port 8000``."""

from __future__ import annotations

import logging
import os

import uvicorn

from .._cli import base_parser
from .app import GatewaySettings, create_app


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = base_parser(__doc__)
    p.add_argument("--host", default=env("SCAF_GATEWAY_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("SCAF_GATEWAY_PORT", "8000")))
    p.add_argument("--request-timeout", type=float, default=float(env("SCAF_REQUEST_TIMEOUT", "600")))
    args = p.parse_args(argv)
    logging.basicConfig(level=env("SCAF_LOG_LEVEL", "INFO"))
    app = create_app(GatewaySettings(nats_url=args.nats, prefix=args.prefix, request_timeout=args.request_timeout))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=env("SCAF_LOG_LEVEL", "info").lower(),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
