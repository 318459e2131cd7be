"""Step-wise generation shared by beam search, MCTS and tree of thoughts: continue a partial
reasoning chain by one step (a generation that stops at a blank line)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..proto.tasks import GenerationTask, Task
from ..runtime.controller import Controller, ControllerGen, ParallelProcess
from ._common import branch_seed, derive_generation, isolated_clones, text_of
from .answers import extract_boxed

STEP_SEPARATOR = "\n\n"
DEFAULT_STEP_STOP = ("\n\n",)

FinalCheck = Callable[[str, str | None], bool]


def default_is_final(step: str, finish_reason: str | None) -> bool:
    """A chain ends when a step gives a boxed answer, is empty, or the model stopped for good."""
    return extract_boxed(step) is not None or not step.strip() or finish_reason in ("eos", "end")


def join_steps(steps: Sequence[str]) -> str:
    return STEP_SEPARATOR.join(steps)


def continuation_prompt(prompt: str, steps: Sequence[str]) -> str:
    return prompt + (join_steps(steps) + STEP_SEPARATOR if steps else "")


def expand(
    caller: Task,
    generator: Controller,
    prompt: str,
    chains: Sequence[Sequence[str]],
    per_chain: int,
    stop: Sequence[str],
    max_tokens: int | None,
    seed_offset: int,
    base_seed: int | None,
) -> ControllerGen:
    """Generate ``per_chain`` next steps for every chain, all as one parallel group; returns
    one list of finished step tasks per chain (failed ones left out)."""
    tasks: list[GenerationTask] = []
    for c, chain in enumerate(chains):
        for j in range(per_chain):
            overrides: dict[str, Any] = {
                "input_str": continuation_prompt(prompt, chain),
                "stop": list(stop),
                "seed": branch_seed(caller, seed_offset + c * per_chain + j, base_seed),
            }
            if max_tokens is not None:
                overrides["max_tokens"] = max_tokens
            tasks.append(derive_generation(caller, **overrides))
    if tasks:
        yield ParallelProcess(isolated_clones(generator, len(tasks)), [[t] for t in tasks])
    out: list[list[GenerationTask]] = []
    for c in range(len(chains)):
        group = tasks[c * per_chain : (c + 1) * per_chain]
        out.append([t for t in group if t.ok])
    return out


def step_text(task: Task) -> str:
    return text_of(task).strip()


def score(reward: Controller, prompt: str, chains: Sequence[Sequence[str]]) -> ControllerGen:
    """Score whole chains with one batched reward call (its own label); ``None`` on failure."""
    if not chains:
        return []
    probes = [GenerationTask(input_str=prompt, output_str=join_steps(c)) for c in chains]
    scorer = reward.clone()
    kwargs: dict[str, Any] = {"prompt": prompt}
    if getattr(scorer, "step_splitter", None) is not None:
        kwargs["steps"] = [list(c) for c in chains]
    yield ParallelProcess([scorer], [list(probes)], [kwargs])
    scores: list[float] | None = getattr(scorer, "scores", None)
    return scores
