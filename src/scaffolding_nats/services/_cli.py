"""What every service's entry point shares: flags from the environment, logging, metrics
endpoint, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any


def setting(
    p: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: str,
    help: str,
    *,
    type: Callable[[str], Any] = str,
    choices: list[str] | None = None,
) -> None:
    """A flag whose default comes from an environment variable; ``--help`` names both."""
    p.add_argument(
        flag,
        type=type,
        default=type(os.environ.get(env, default)),
        choices=choices,
        help=f"{help} [env {env}; default {default or 'empty'}]",
    )


def base_parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description,
        epilog="Also read: SCAF_LOG_LEVEL (default INFO); SCAF_OTEL_EXPORTER (console or otlp; unset: no "
        "tracing) with OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    setting(p, "--nats", "SCAF_NATS_URL", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
    setting(p, "--prefix", "SCAF_PREFIX", "scaf", "subject prefix of this deployment")
    setting(p, "--metrics-port", "SCAF_METRICS_PORT", "0", "serve Prometheus metrics on this port (0: off)", type=int)
    setting(p, "--metrics-host", "SCAF_METRICS_HOST", "127.0.0.1", "address of the metrics server")
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
