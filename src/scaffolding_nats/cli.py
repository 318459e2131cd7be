"""``scaffolding-nats``: one command for every part, e.g. ``scaffolding-nats controller --help``.

Each subcommand is the service's own entry point (the same as ``python -m <module>``); the
arguments after it are that entry point's."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("scaffolding_nats.devstack.run", "the whole system on local processes (NATS, model, services, gateway)"),
    "controller": ("scaffolding_nats.services.controller.__main__", "the controller service (runs methods)"),
    "worker": ("scaffolding_nats.services.worker.__main__", "a worker service (one backend, some worker tags)"),
    "gateway": ("scaffolding_nats.services.gateway.__main__", "the OpenAI-compatible HTTP gateway"),
    "schema": ("scaffolding_nats.schemas", "write (or --check) the JSON Schemas of the contract"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="scaffolding-nats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<11} {help}" for name, (_, help) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to run; COMMAND --help for its options")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    sys.argv[0] = f"scaffolding-nats {args.command}"
    result: Any = module.main(argv[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
