"""Step-wise generation shared by beam search, MCTS and tree of thoughts: continue a partial
reasoning chain by one step (a generation that stops at a blank line), score whole chains, and
``StepSearch``, the base class holding what the three searches have in common."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from ...proto.tasks import GenerationTask, Task
from ...runtime.controller import Controller, ControllerGen, ParallelProcess
from ..reward import RewardScorer, scores_of
from .answers import Extractor, extract_boxed, get_extractor
from .base import MethodController, branch_seed, derive_generation, fan_out, text_of

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


def step_text(task: Task) -> str:
    return text_of(task).strip()


def score(reward: Controller, prompt: str, chains: Sequence[Sequence[str]]) -> ControllerGen:
    """Score whole chains with one batched reward call (its own label); ``None`` on failure."""
    if not chains:
        return []
    probes = [GenerationTask(input_str=prompt, output_str=join_steps(c)) for c in chains]
    scorer = reward.clone()
    kwargs: dict[str, Any] = {"prompt": prompt}
    if isinstance(scorer, RewardScorer) and scorer.step_splitter is not None:
        kwargs["steps"] = [list(c) for c in chains]
    yield ParallelProcess([scorer], [list(probes)], [kwargs])
    return scores_of(scorer)


class StepOptions(TypedDict, total=False):
    """The parameters every step-wise search takes, passed on as ``**options`` (their defaults
    are ``StepSearch.__init__``'s; the registry reads them from there)."""

    step_stop: list[str] | None
    step_max_tokens: int | None
    is_final: FinalCheck
    extractor: str | Extractor | None
    base_seed: int | None
    name: str | None


class StepSearch(MethodController):
    """Base of the step-wise searches: the step generator and the reward model (each subclass
    picks its defaults), how one step is generated and judged final, and the closing generation."""

    def __init__(
        self,
        generation_controller: Controller,
        reward_controller: Controller,
        *,
        step_stop: list[str] | None = None,
        step_max_tokens: int | None = 256,
        is_final: FinalCheck = default_is_final,
        extractor: str | Extractor | None = "default",
        base_seed: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.generation_controller = generation_controller
        self.reward_controller = reward_controller
        self.step_stop = list(step_stop or DEFAULT_STEP_STOP)
        self.step_max_tokens = step_max_tokens
        self.is_final = is_final
        self.extractor = get_extractor(extractor)
        self.base_seed = base_seed

    def _expand(
        self, caller: Task, prompt: str, chains: Sequence[Sequence[str]], per_chain: int, seed_offset: int
    ) -> ControllerGen:
        """Generate ``per_chain`` next steps for every chain, all as one parallel group; returns
        one list of finished step tasks per chain (failed ones left out)."""
        tasks: list[GenerationTask] = []
        for c, chain in enumerate(chains):
            for j in range(per_chain):
                overrides: dict[str, Any] = {
                    "input_str": continuation_prompt(prompt, chain),
                    "stop": list(self.step_stop),
                    "seed": branch_seed(caller, seed_offset + c * per_chain + j, self.base_seed),
                }
                if self.step_max_tokens is not None:
                    overrides["max_tokens"] = self.step_max_tokens
                tasks.append(derive_generation(caller, **overrides))
        if tasks:
            yield fan_out(self.generation_controller, tasks)
        out: list[list[GenerationTask]] = []
        for c in range(len(chains)):
            group = tasks[c * per_chain : (c + 1) * per_chain]
            out.append([t for t in group if t.ok])
        return out

    def _extend(self, steps: Sequence[str], child: GenerationTask) -> tuple[list[str], bool]:
        """``steps`` plus the step ``child`` generated (an empty step adds nothing), and whether
        the chain is now final."""
        text = step_text(child)
        return ([*steps, text] if text else list(steps)), self.is_final(text, child.finish_reason)

    def _complete(self, caller: Task, prompt: str, steps: Sequence[str]) -> ControllerGen:
        """One free generation after an unfinished chain, to reach the answer; returns the
        completed text, or ``None`` when it failed or gave nothing."""
        final = derive_generation(
            caller,
            input_str=continuation_prompt(prompt, steps),
            seed=branch_seed(caller, 10_000, self.base_seed),
        )
        yield ParallelProcess([self.generation_controller.clone()], [[final]])
        if final.ok and step_text(final):
            return join_steps([*steps, step_text(final)])
        return None
