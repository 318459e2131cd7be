"""JSON Schemas generated from the models, for clients in other languages.

``python -m scaffolding_nats.proto.schema proto/schema`` writes them;
``--check`` exits non-zero when the checked-in files are stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import ErrorInfo
from .messages import Job, JobEvent, JobRecord, TaskReply, TaskRequest
from .tasks import TASK_TYPES
from .version import PROTOCOL_VERSION

MESSAGES: dict[str, type[BaseModel]] = {
    "task_request": TaskRequest,
    "task_reply": TaskReply,
    "job": Job,
    "job_event": JobEvent,
    "job_record": JobRecord,
    "error": ErrorInfo,
    **{f"task.{kind}": cls for kind, cls in TASK_TYPES.items()},
}


def _task_schema(cls: type[BaseModel]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="serialization")
    results = sorted(getattr(cls, "RESULT_FIELDS", ()))
    schema["x-result-fields"] = results
    schema["x-task-kind"] = getattr(cls, "kind", None)
    schema["x-default-worker-tag"] = getattr(cls, "DEFAULT_TAG", None)
    return schema


def generate() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, model in MESSAGES.items():
        schema = _task_schema(model) if name.startswith("task.") else model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["x-protocol-version"] = PROTOCOL_VERSION
        out[f"{name}.json"] = schema
    from ..methods.reference import generate as method_parameters  # methods build on the contract

    out["methods.json"] = method_parameters()
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


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
