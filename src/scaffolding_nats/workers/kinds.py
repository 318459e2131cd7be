"""The worker kinds: one table, read by the worker service (``--worker <kind>``) and by the
permission generator (the NATS user ``worker-<kind>`` and the tags it may serve).

A kind's name is its NATS user's and its deployment's (``worker-reward``); an alias is another
name the worker service takes for it (``--worker judge``, as deployments spell it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerKind:
    name: str
    spec: str  # MODULE:CLASS of its worker
    tags: tuple[str, ...]  # the tags it serves as deployed
    deployed: bool = True  # by ``make run``, compose and ``k8s/`` (False: a test double)
    aliases: tuple[str, ...] = ()


KINDS: tuple[WorkerKind, ...] = (
    WorkerKind("synthetic", "scaffolding_nats.workers.synthetic:SyntheticWorker", ("generation",), deployed=False),
    WorkerKind("openai", "scaffolding_nats.workers.openai_worker:OpenAIWorker", ("generation",)),
    WorkerKind(
        "reward",
        "scaffolding_nats.workers.judge_reward_worker:LogprobJudgeRewardWorker",
        ("reward",),
        aliases=("judge",),
    ),
    WorkerKind("tools", "scaffolding_nats.workers.tools_worker:ToolsWorker", ("tool_call",)),
    WorkerKind("trtllm", "scaffolding_nats.workers.trtllm_worker:TrtLlmWorker", ("generation",)),  # k8s/gpu/ only
)


def specs() -> dict[str, str]:
    """Every name the worker service takes (kinds and their aliases) -> MODULE:CLASS."""
    return {name: kind.spec for kind in KINDS for name in (kind.name, *kind.aliases)}


def deployed_tags() -> Mapping[str, Sequence[str]]:
    """Deployed worker kind -> the tags it serves: the worker roles of a default deployment."""
    return {kind.name: kind.tags for kind in KINDS if kind.deployed}
