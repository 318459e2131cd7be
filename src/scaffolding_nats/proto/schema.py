"""JSON Schemas of the contract's models, for clients in other languages.

The contract depends on nothing: files that need more (the methods' parameters) are added by
``scaffolding_nats.schemas``, which writes and checks ``proto/schema/`` (``make schema``).
"""

from __future__ import annotations

import json
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
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
