"""Run a worker service: ``python -m scaffolding_nats.services.worker --worker MODULE:CLASS``.

The worker class is loaded by import path, so adding a backend needs no change here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
from typing import Any

from ...proto.subjects import Subjects
from ...runtime.worker import Worker
from ...transport import WorkerHost, connect
from ...transport.jetstream import Durability, TaskQueueSettings
from .._cli import base_parser, run_service

BUILTIN = {
    "synthetic": "scaffolding_nats.workers.synthetic:SyntheticWorker",
    "openai": "scaffolding_nats.workers.openai_worker:OpenAIWorker",
    "judge": "scaffolding_nats.workers.judge_reward_worker:LogprobJudgeRewardWorker",
    "tools": "scaffolding_nats.workers.tools_worker:ToolsWorker",
    "trtllm": "scaffolding_nats.workers.trtllm_worker:TrtLlmWorker",
}


def load_worker(spec: str, kwargs: dict[str, Any]) -> Worker:
    module_name, _, cls_name = BUILTIN.get(spec, spec).partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    worker = cls(**kwargs)
    if not isinstance(worker, Worker):
        raise TypeError(f"{spec} is not a Worker")
    return worker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = base_parser(__doc__)
    p.add_argument("--worker", default=env("SCAF_WORKER", "synthetic"), help="builtin name or MODULE:CLASS")
    p.add_argument("--worker-args", default=env("SCAF_WORKER_ARGS", "{}"), help="JSON constructor kwargs")
    p.add_argument("--tags", default=env("SCAF_TAGS", "generation"), help="comma-separated worker tags")
    p.add_argument("--max-concurrency", type=int, default=int(env("SCAF_MAX_CONCURRENCY", "64")))
    p.add_argument("--name", default=env("SCAF_SERVICE_NAME", "scaffolding-worker"))
    p.add_argument(
        "--task-ack-wait",
        type=float,
        default=float(env("SCAF_TASK_ACK_WAIT", "6")),
        help="seconds without progress after which a task of a dead replica is redelivered",
    )
    p.add_argument("--js-replicas", type=int, default=int(env("SCAF_JS_REPLICAS", "1")), help="JetStream replicas")
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
            durability=Durability(replicas=args.js_replicas),
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
