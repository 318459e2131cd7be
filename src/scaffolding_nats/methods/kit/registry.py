"""Methods by name: builders for every controller kind, and controller trees built from
declarative configs (dicts, JSON or YAML), e.g.::

    {"name": "vote8_dynasor", "method": "majority_vote",
     "params": {"sample_num": 8, "sampler": {"method": "dynasor", "params": {"chunk_size": 64}}}}

A sub-controller slot (``sampler``, ``reward``, ``generator``, ``probe``) takes a nested config
or the name of a registered method. Errors name the bad path, e.g. ``params.sampler.method``.

Each controller class declares its ``kind`` and ``slots`` (see ``methods.base``); the built-in
kinds are the classes ``scaffolding_nats.methods`` exports. A method file may also name any
class by import path, ``method: "pkg.module:Class"`` (a job's parameters may not)."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from ...errors import ScaffoldingError, UnknownMethod
from ...proto.errors import ErrorCode
from ...runtime.controller import Controller
from .base import ParamError, Slot

DEFAULT_CONFIG = Path(__file__).parent.parent / "default_methods.yaml"


class MethodConfigError(ScaffoldingError, ValueError):
    """A method config that cannot be built; ``path`` points at the bad entry."""

    code = ErrorCode.INVALID

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<config>'}: {message}", details={"path": path})
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class MethodKind:
    """How to build one controller class: its sub-controller slots (config key -> argument)
    and the method each slot defaults to."""

    cls: type[Controller]
    slots: dict[str, str] = field(default_factory=dict)
    slot_defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, controller: type[Controller]) -> MethodKind:
        """The kind a controller class declares (``slots``: config key -> ``Slot``)."""
        declared: Mapping[str, Slot] = getattr(controller, "slots", None) or {}
        return cls(
            controller,
            {key: slot.arg for key, slot in declared.items()},
            {key: slot.default for key, slot in declared.items() if slot.default is not None},
        )


def declared_kind(obj: Any) -> str | None:
    """The ``kind`` a controller class sets on itself (not one it inherits)."""
    if isinstance(obj, type) and issubclass(obj, Controller):
        kind = obj.__dict__.get("kind")
        return kind if isinstance(kind, str) else None
    return None


def _builtin_kinds() -> dict[str, MethodKind]:
    """Every controller class exported by ``scaffolding_nats.methods`` that declares a kind."""
    from ... import methods

    kinds: dict[str, MethodKind] = {}
    for name in methods.__all__:
        obj = getattr(methods, name)
        kind = declared_kind(obj)
        if kind is not None:
            kinds[kind] = MethodKind.of(obj)
    return kinds


def import_kind(spec: str, path: str) -> MethodKind:
    """A controller class named ``"pkg.module:Class"`` (a method added outside this package)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise MethodConfigError(path, f"{spec!r}: an import path is written 'pkg.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise MethodConfigError(path, f"cannot import {spec!r}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, Controller)):
        raise MethodConfigError(path, f"{spec!r} is not a Controller class")
    return MethodKind.of(obj)


def _reject_imports(params: Any, path: str) -> None:
    """A job's parameters may choose among registered methods, never import code."""
    if isinstance(params, Mapping):
        method = params.get("method")
        if isinstance(method, str) and ":" in method:
            raise MethodConfigError(f"{path}method", "import paths are allowed in method files, not in a job")
        for key, value in params.items():
            _reject_imports(value, f"{path}{key}.")
    elif isinstance(params, list):
        for i, value in enumerate(params):
            _reject_imports(value, f"{path}{i}.")


DEFAULT_LIMITS: dict[str, int] = {
    "sample_num": 64,
    "num_traces": 64,
    "warmup_traces": 64,
    "beam_width": 16,
    "expansions_per_beam": 16,
    "max_steps": 64,
    "max_depth": 32,
    "max_iterations": 64,
    "num_thoughts_per_step": 16,
    "branch_factor": 16,
    "vote_samples": 16,
    "certainty_threshold": 64,
}
"""Upper bounds on every fan-out parameter, at any depth of a method tree: one request must not
be able to launch unbounded work (the controller's ``--param-limit NAME=N`` changes them)."""


def parse_limits(text: str | None) -> dict[str, int]:
    """``"sample_num=128,beam_width=32"`` over the defaults."""
    limits = dict(DEFAULT_LIMITS)
    for item in (text or "").split(","):
        if item.strip():
            name, _, value = item.partition("=")
            limits[name.strip()] = int(value)
    return limits


@cache
def _adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # an annotation that cannot be resolved: skip type checks
        return {}


def init_parameters(cls: type) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """A class's constructor parameters (``self`` left out) and their type hints. A
    ``**options: Unpack[SomeOptions]`` stands for the parameters of the base class's constructor
    that ``SomeOptions`` names, so a subclass does not restate what it passes on."""
    owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
    hints = _hints(owner)
    params: dict[str, inspect.Parameter] = {}
    types: dict[str, Any] = {}
    for name, param in inspect.signature(owner.__init__).parameters.items():  # type: ignore[misc]
        hint = hints.get(name)
        if param.kind is inspect.Parameter.VAR_KEYWORD and typing.get_origin(hint) is typing.Unpack:
            (options,) = typing.get_args(hint)
            names = options.__required_keys__ | options.__optional_keys__
            base_params, base_types = init_parameters(owner.__mro__[1])
            params.update({n: p for n, p in base_params.items() if n in names})
            types.update({n: t for n, t in base_types.items() if n in names})
        elif name != "self":
            params[name] = param
            if hint is not None:
                types[name] = hint
    return params, types


class MethodRegistry:
    """Named method configs over a table of method kinds."""

    def __init__(
        self, kinds: Mapping[str, MethodKind] | None = None, *, limits: Mapping[str, int] | None = None
    ) -> None:
        self.kinds: dict[str, MethodKind] = dict(kinds if kinds is not None else _builtin_kinds())
        self.configs: dict[str, dict[str, Any]] = {}
        self.limits: dict[str, int] = dict(DEFAULT_LIMITS if limits is None else limits)

    # -- registration ----------------------------------------------------------------------

    def register_kind(self, method: str, kind: MethodKind) -> None:
        self.kinds[method] = kind

    def register(self, name: str, config: Mapping[str, Any], *, validate: bool = True) -> None:
        """Add a named method; by default it is built once now, so bad configs fail early."""
        cfg = {k: copy.deepcopy(v) for k, v in config.items() if k != "name"}
        if validate:
            self.build_config(cfg, _stack=(name,))
        self.configs[name] = cfg

    def names(self) -> list[str]:
        return sorted(self.configs)

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    # -- building --------------------------------------------------------------------------

    def build(self, name: str, params_override: Mapping[str, Any] | None = None) -> Controller:
        """A fresh controller for the named method, with ``params_override`` deep-merged into
        its params (e.g. a job's parameters)."""
        if name not in self.configs:
            raise UnknownMethod(
                f"unknown method {name!r} (known: {', '.join(self.names())})",
                details={"method": name, "known": self.names()},
            )
        cfg = copy.deepcopy(self.configs[name])
        if params_override:
            if not isinstance(params_override, Mapping):
                raise MethodConfigError("params", "params must be a mapping")
            _reject_imports(params_override, "params.")
            cfg["params"] = _merge(cfg.get("params") or {}, params_override)
        return self.build_config(cfg, _stack=(name,))

    def build_config(self, config: Any, path: str = "", *, _stack: tuple[str, ...] = ()) -> Controller:
        """Build a controller tree from a config node (a mapping, or a registered name)."""
        here = path.rstrip(".")
        if isinstance(config, str):
            if config in _stack:
                raise MethodConfigError(here, f"method {config!r} refers to itself")
            if config not in self.configs:
                raise MethodConfigError(here, f"unknown method {config!r} (known: {', '.join(self.names())})")
            return self.build_config(copy.deepcopy(self.configs[config]), path, _stack=(*_stack, config))
        if not isinstance(config, Mapping):
            raise MethodConfigError(here, "expected a mapping with 'method' and 'params', or a method name")
        extra = set(config) - {"name", "method", "params"}
        if extra:
            raise MethodConfigError(f"{path}{sorted(extra)[0]}", "unknown key (allowed: name, method, params)")
        method = config.get("method")
        if not isinstance(method, str) or not method:
            raise MethodConfigError(f"{path}method", "missing or not a string")
        if method not in self.kinds and ":" in method:
            self.kinds[method] = import_kind(method, f"{path}method")
        if method not in self.kinds:
            if method in self.configs and method not in _stack:
                base = copy.deepcopy(self.configs[method])
                base["params"] = _merge(base.get("params") or {}, config.get("params") or {})
                return self.build_config(base, path, _stack=(*_stack, method))
            raise MethodConfigError(
                f"{path}method", f"unknown method {method!r} (known: {', '.join(sorted(self.kinds))})"
            )
        params = config.get("params") or {}
        if not isinstance(params, Mapping):
            raise MethodConfigError(f"{path}params", "expected a mapping")
        return self._construct(self.kinds[method], dict(params), f"{path}params.", _stack)

    def _construct(self, kind: MethodKind, params: dict[str, Any], path: str, stack: tuple[str, ...]) -> Controller:
        parameters, hints = init_parameters(kind.cls)
        accepts_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        known = set(parameters)
        kwargs: dict[str, Any] = {}
        for slot, arg in kind.slots.items():
            sub = params.pop(slot, kind.slot_defaults.get(slot))
            if sub is not None:
                kwargs[arg] = self.build_config(sub, f"{path}{slot}.", _stack=stack)
        for key, value in params.items():
            if key in kind.slots.values():
                raise MethodConfigError(
                    f"{path}{key}", f"give sub-controllers by their config key ({', '.join(kind.slots)})"
                )
            if key not in known and not accepts_extra:
                raise MethodConfigError(f"{path}{key}", f"unknown parameter of {kind.cls.__name__}")
            if key in hints:
                try:
                    value = _adapter(hints[key]).validate_python(value, strict=True)
                except ValidationError as exc:
                    raise MethodConfigError(f"{path}{key}", exc.errors()[0].get("msg", "invalid value")) from None
            limit = self.limits.get(key)
            if limit is not None and isinstance(value, int) and value > limit:
                raise MethodConfigError(f"{path}{key}", f"at most {limit} on this deployment (got {value})")
            kwargs[key] = value
        try:
            return kind.cls(**kwargs)
        except ParamError as exc:
            raise MethodConfigError(f"{path}{exc.param}", exc.reason) from None
        except (TypeError, ValueError) as exc:
            raise MethodConfigError(path.rstrip("."), str(exc)) from None


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_config_text(text: str, source: str = "<text>") -> Any:
    """JSON or YAML text (YAML is a superset of JSON; JSON is tried first for its errors)."""
    import yaml

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MethodConfigError("", f"{source} is neither JSON nor YAML: {exc}") from None


def load_configs(data: Any, registry: MethodRegistry) -> MethodRegistry:
    """Register every method of a loaded file: ``{"methods": {name: config}}`` or a list of
    configs that carry their ``name``."""
    methods = data.get("methods", data) if isinstance(data, Mapping) else data
    if isinstance(methods, Mapping):
        items = list(methods.items())
    elif isinstance(methods, list):
        items = []
        for i, entry in enumerate(methods):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise MethodConfigError(f"methods[{i}].name", "each listed method needs a name")
            items.append((entry["name"], entry))
    else:
        raise MethodConfigError("methods", "expected a mapping of name to config, or a list")
    # Register in dependency order: a config may name another one.
    for name, cfg in items:
        registry.configs[name] = {k: v for k, v in cfg.items() if k != "name"} if isinstance(cfg, Mapping) else cfg
    for name, _ in items:
        try:
            registry.build(name)
        except MethodConfigError as exc:
            raise MethodConfigError(f"methods.{name}.{exc.path}".rstrip("."), exc.reason) from None
    return registry


def load_registry(
    path: str | Path | None = None, *, include_defaults: bool = True, limits: Mapping[str, int] | None = None
) -> MethodRegistry:
    """The default methods, plus (or only, with ``include_defaults=False``) those of ``path``."""
    registry = MethodRegistry(limits=limits)
    sources = ([DEFAULT_CONFIG] if include_defaults or path is None else []) + ([Path(path)] if path else [])
    for source in sources:
        load_configs(parse_config_text(source.read_text(encoding="utf-8"), str(source)), registry)
    return registry
