"""Run the controller service: ``python -m scaffolding_nats.services.controller``."""

from __future__ import annotations

import asyncio
import logging
import os

from ...methods.registry import load_registry
from ...proto.subjects import Subjects
from ...transport import connect
from .._cli import base_parser, run_service
from .service import ControllerService


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = base_parser(__doc__)
    p.add_argument("--methods", default=env("SCAF_METHODS_FILE"), help="YAML/JSON method configs to add")
    p.add_argument("--max-jobs", type=int, default=int(env("SCAF_MAX_JOBS", "32")))
    p.add_argument("--max-job-seconds", type=float, default=float(env("SCAF_MAX_JOB_SECONDS", "900")))
    p.add_argument("--task-timeout", type=float, default=float(env("SCAF_TASK_TIMEOUT", "600")))
    p.add_argument("--prompt-template", default=env("SCAF_PROMPT_TEMPLATE", "chatml"), choices=["chatml", "plain"])
    p.add_argument(
        "--provision",
        action="store_true",
        default=env("SCAF_PROVISION", "") in ("1", "true"),
        help="create missing streams (needs the admin role; else run `services.admin init` first)",
    )
    args = p.parse_args(argv)
    registry = load_registry(args.methods)

    async def serve(stop: asyncio.Event) -> None:
        nc = await connect(args.nats.split(","), name="scaffolding-controller")
        try:
            async with ControllerService(
                nc,
                registry,
                subjects=Subjects(args.prefix),
                max_jobs=args.max_jobs,
                max_job_seconds=args.max_job_seconds,
                task_timeout=args.task_timeout,
                prompt_template=args.prompt_template,
                provision=args.provision,
            ):
                logging.info("controller serving %d methods on %s", len(registry.names()), args.nats)
                print("ready", flush=True)
                await stop.wait()
        finally:
            await nc.drain()

    run_service(args, serve, name="scaffolding-controller")


if __name__ == "__main__":
    main()
