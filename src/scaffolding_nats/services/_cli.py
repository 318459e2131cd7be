"""What every service's entry point shares: flags from the environment, logging, metrics
endpoint, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable


def base_parser(description: str | None) -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--nats",
        default=env("SCAF_NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server URL(s), comma-separated",
    )
    p.add_argument("--prefix", default=env("SCAF_PREFIX", "scaf"), help="subject prefix of this deployment")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("SCAF_METRICS_PORT", "0")),
        help="serve Prometheus metrics on this port (0: off)",
    )
    p.add_argument("--metrics-host", default=env("SCAF_METRICS_HOST", "127.0.0.1"))
    return p


def run_service(args: argparse.Namespace, serve: Callable[[asyncio.Event], Awaitable[None]], *, name: str) -> None:
    from ..telemetry import configure_from_env

    configure_from_env(name)
    logging.basicConfig(
        level=os.environ.get("SCAF_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "metrics_port", 0):
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(main())
