"""A parameter reference for every method kind, as JSON Schema generated from the controller
constructors (the same signatures and type hints the registry validates ``params`` against),
so clients in any language can see what ``params`` / ``method_params`` accept."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import TypeAdapter

from ...proto.tasks import SamplingParams
from .registry import DEFAULT_LIMITS, MethodKind, MethodRegistry, init_parameters, load_registry

SUB_METHOD = {
    "description": "a sub-method: the name of a served method, or {method, params} nested the same way",
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"method": {"type": "string"}, "params": {"type": "object"}},
            "required": ["method"],
            "additionalProperties": False,
        },
    ],
}


def _json_default(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return list(value)
    return None


def kind_schema(kind: MethodKind, limits: dict[str, int]) -> dict[str, Any]:
    cls = kind.cls
    parameters, hints = init_parameters(cls)
    properties: dict[str, Any] = {}
    slot_args = set(kind.slots.values())
    for slot, _ in kind.slots.items():
        properties[slot] = dict(SUB_METHOD)
        if slot in kind.slot_defaults:
            properties[slot]["default"] = kind.slot_defaults[slot]
    sampling = False
    for name, param in parameters.items():
        if name in slot_args or param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            sampling = True
            continue
        try:
            schema = TypeAdapter(hints[name]).json_schema() if name in hints else {}
        except Exception:  # a Python-only type (e.g. a callable): documented by name only
            schema = {"description": f"Python-only value ({hints[name]})"}
        default = _json_default(param.default) if param.default is not inspect.Parameter.empty else None
        if default is not None:
            schema["default"] = default
        if name in limits:
            schema["maximum"] = limits[name]
        properties[name] = schema
    out: dict[str, Any] = {
        "title": cls.__name__,
        "description": inspect.getdoc(cls) or "",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if sampling:  # extra keyword arguments are sampling fields for the method's generations
        out["additionalProperties"] = {"description": "a sampling field (see SamplingParams)"}
        out["x-sampling-fields"] = sorted(SamplingParams.model_fields)
    return out


def generate(registry: MethodRegistry | None = None) -> dict[str, Any]:
    """``{"kinds": {kind: schema}, "methods": {served name: its kind and configured params}}``."""
    registry = registry or load_registry()
    limits = dict(DEFAULT_LIMITS) | registry.limits
    kinds = {name: kind_schema(kind, limits) for name, kind in sorted(registry.kinds.items())}
    methods = {}
    for name in registry.names():
        config = registry.configs[name]
        base = config.get("method")
        while isinstance(base, str) and base not in registry.kinds and base in registry.configs:
            base = registry.configs[base].get("method")
        methods[name] = {"kind": base, "params": config.get("params") or {}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Method parameters",
        "description": "What a job's `params` (the gateway's `method_params`) accept, per method kind; "
        "a served method is a kind with configured defaults that a job's params are deep-merged over.",
        "kinds": kinds,
        "methods": methods,
    }
