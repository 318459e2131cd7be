"""Run the controller service: ``python -m scaffolding_nats.services.controller``."""

from __future__ import annotations

import asyncio
import logging
import os

from ...methods.registry import load_registry, parse_limits
from ...proto.subjects import Subjects
from ...transport import connect
from .._cli import base_parser, run_service, setting
from .service import ControllerService


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = base_parser(__doc__)
    setting(p, "--methods", "SCAF_METHODS_FILE", "", "YAML/JSON method configs to add")
    setting(p, "--max-jobs", "SCAF_MAX_JOBS", "32", "jobs run at once by this replica", type=int)
    setting(p, "--max-job-seconds", "SCAF_MAX_JOB_SECONDS", "900", "run-time limit of one job", type=float)
    setting(p, "--task-timeout", "SCAF_TASK_TIMEOUT", "600", "deadline of one task, all attempts", type=float)
    setting(
        p, "--prompt-template", "SCAF_PROMPT_TEMPLATE", "chatml", "chat format for completion methods",
        choices=["chatml", "plain"],
    )
    setting(
        p, "--param-limits", "SCAF_PARAM_LIMITS", "",
        "upper bounds of fan-out parameters over the defaults, e.g. sample_num=128,beam_width=32",
    )
    p.add_argument(
        "--provision",
        action="store_true",
        default=env("SCAF_PROVISION", "") in ("1", "true"),
        help="create missing streams (needs the admin role; else run `services.admin init` first) "
        "[env SCAF_PROVISION=1]",
    )
    args = p.parse_args(argv)
    registry = load_registry(args.methods or None, limits=parse_limits(args.param_limits))

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
