"""Create the deployment's streams, consumer and bucket, or check them:
``python -m scaffolding_nats.services.admin init|check`` (as SCAF_NATS_USER=admin)."""

from __future__ import annotations

import asyncio
import os
import sys

from ...proto.subjects import Subjects
from ...transport import connect
from ...transport.jetstream import NotProvisioned, check, check_task_queues, durability_for, provision
from ...workers.kinds import deployed_tags
from .._cli import base_parser


async def _run(command: str, servers: list[str], prefix: str, tags: list[str]) -> int:
    nc = await connect(servers, name="scaffolding-admin", max_reconnect_attempts=0)
    try:
        subjects, js = Subjects(prefix), nc.jetstream()
        if command == "init":
            await provision(js, subjects, durability_for(nc), tags=tags)
            print(f"provisioned {subjects.jobs_stream}, {subjects.jobs_consumer}, {subjects.events_stream}, "
                  f"{subjects.tasks_stream} ({', '.join(subjects.task_consumer(t) for t in tags)}), "
                  f"{subjects.results_bucket}", flush=True)
        else:
            try:
                await check(js, subjects)
                await check_task_queues(js, subjects, tags)
            except NotProvisioned as exc:
                print(exc.message, file=sys.stderr, flush=True)
                return 1
            print("provisioned", flush=True)
        return 0
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    p = base_parser(__doc__)
    p.add_argument("command", choices=["init", "check"])
    default_tags = ",".join(sorted({t for tags in deployed_tags().values() for t in tags}))
    p.add_argument(
        "--tags",
        default=os.environ.get("SCAF_TASK_TAGS", default_tags),
        help="worker tags whose task queue consumers to create/check (comma-separated)",
    )
    args = p.parse_args(argv)
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    sys.exit(asyncio.run(_run(args.command, args.nats.split(","), args.prefix, tags)))


if __name__ == "__main__":
    main()
