"""Run a worker service: ``python -m scaffolding_nats.services.worker --worker MODULE:CLASS``.

The worker class is loaded by import path, so adding a backend needs no change here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
from typing import Any

from ...proto.subjects import Subjects
from ...runtime.worker import Worker
from ...transport import WorkerHost, connect
from ...transport.jetstream import Durability, TaskQueueSettings
from ...workers.kinds import specs
from .._cli import base_parser, run_service, setting

BUILTIN = specs()  # worker kind (or alias) -> MODULE:CLASS, from the one table of kinds


def load_worker(spec: str, kwargs: dict[str, Any]) -> Worker:
    module_name, _, cls_name = BUILTIN.get(spec, spec).partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    worker = cls(**kwargs)
    if not isinstance(worker, Worker):
        raise TypeError(f"{spec} is not a Worker")
    return worker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__)
    setting(p, "--worker", "SCAF_WORKER", "synthetic", f"builtin name ({', '.join(BUILTIN)}) or MODULE:CLASS")
    setting(p, "--worker-args", "SCAF_WORKER_ARGS", "{}", "JSON constructor kwargs")
    setting(p, "--tags", "SCAF_TAGS", "generation", "comma-separated worker tags")
    setting(p, "--max-concurrency", "SCAF_MAX_CONCURRENCY", "64", "tasks in flight on this replica", type=int)
    setting(p, "--name", "SCAF_SERVICE_NAME", "scaffolding-worker", "NATS micro service name")
    setting(
        p,
        "--task-ack-wait",
        "SCAF_TASK_ACK_WAIT",
        "6",
        "seconds without progress after which a dead replica's task is redelivered",
        type=float,
    )
    setting(
        p,
        "--js-replicas",
        "SCAF_JS_REPLICAS",
        "0",
        "JetStream replicas of the task queue (0: 1 on one server, 3 on a cluster)",
        type=int,
    )
    return p.parse_args(argv)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    worker = load_worker(args.worker, json.loads(args.worker_args))
    nc = await connect(args.nats.split(","), name=args.name)
    try:
        async with WorkerHost(
            nc,
            worker,
            tags=[t.strip() for t in args.tags.split(",") if t.strip()],
            subjects=Subjects(args.prefix),
            max_concurrency=args.max_concurrency,
            name=args.name,
            durability=Durability(replicas=args.js_replicas) if args.js_replicas else None,
            queue=TaskQueueSettings(ack_wait=args.task_ack_wait),
        ):
            logging.info("worker %s serving %s on %s", args.worker, args.tags, args.nats)
            print("ready", flush=True)
            await stop.wait()
    finally:
        await nc.drain()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_service(args, lambda stop: serve(args, stop), name=args.name)


if __name__ == "__main__":
    main()
