"""Backends: each worker executes some task types for the runtime or a worker service.

Imported lazily so a service pulls only its own dependencies (the tools worker needs no
``openai``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .kinds import KINDS

if TYPE_CHECKING:
    from .errors import BackendError, NotSupported
    from .judge_reward_worker import LogprobJudgeRewardWorker
    from .openai_backend import OpenAIBackend
    from .openai_worker import OpenAIWorker
    from .synthetic import SyntheticWorker
    from .tools_worker import ToolsWorker

_EXPORTS = {
    "BackendError": ".errors",
    "NotSupported": ".errors",
    "OpenAIBackend": ".openai_backend",
    # The worker classes, where the table of worker kinds says they are:
    **{cls: module for module, _, cls in (kind.spec.partition(":") for kind in KINDS)},
}

__all__ = [
    "BackendError",
    "LogprobJudgeRewardWorker",
    "NotSupported",
    "OpenAIBackend",
    "OpenAIWorker",
    "SyntheticWorker",
    "ToolsWorker",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_EXPORTS[name], __name__), name)
