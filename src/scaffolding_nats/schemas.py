"""The checked-in JSON Schemas (``proto/schema/``): the contract's models (``proto.schema``)
and the methods' parameters (``methods.json``, which builds on the contract, so it is generated
here rather than in ``proto/``).

``python -m scaffolding_nats.schemas proto/schema`` writes them;
``--check`` exits non-zero when the checked-in files are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .methods.reference import generate as method_parameters
from .proto.schema import generate as contract_schemas
from .proto.schema import render


def generate() -> dict[str, dict[str, Any]]:
    return {**contract_schemas(), "methods.json": method_parameters()}


def stale(directory: Path) -> list[str]:
    """Files that are missing, different, or no longer generated."""
    wanted = {name: render(s) for name, s in generate().items()}
    problems = [
        name
        for name, text in wanted.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
    problems += [p.name for p in directory.glob("*.json") if p.name not in wanted]
    return sorted(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.directory)
        if problems:
            print(f"stale schemas in {args.directory}: {', '.join(problems)}; run `make schema`")
            return 1
        return 0
    args.directory.mkdir(parents=True, exist_ok=True)
    for old in args.directory.glob("*.json"):
        old.unlink()
    for name, schema in generate().items():
        (args.directory / name).write_text(render(schema))
    return 0


if __name__ == "__main__":
    sys.exit(main())
