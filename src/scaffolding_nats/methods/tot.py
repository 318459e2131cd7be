"""Tree of thoughts: expand the frontier level by level (``num_thoughts_per_step`` thoughts per
node, all in parallel), keep ``branch_factor`` of them by reward (``best``), by model votes
(``vote``) or at random (``random``), until a thought gives an answer or ``max_depth``."""

from __future__ import annotations

import random
import re
from typing import Any

from ..proto.tasks import GenerationTask, Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from ._common import (
    branch_seed,
    derive_generation,
    fail_all,
    isolated_clones,
    prompt_of,
    require,
    set_method_result,
    succeed,
    text_of,
)
from ._steps import (
    DEFAULT_STEP_STOP,
    FinalCheck,
    continuation_prompt,
    default_is_final,
    expand,
    join_steps,
    score,
    step_text,
)
from .answers import Extractor, get_extractor
from .native import NativeGenerationController
from .reward import OutcomeRewardController

SELECTION_STRATEGIES = ("best", "vote", "random")
VOTE_PROMPT = (
    "{prompt}\n\nHere are candidate next steps:\n{choices}\n\n"
    'Which candidate is the most promising? Answer with "The best choice is N".'
)
_CHOICE = re.compile(r"best choice is\s*\**\s*(\d+)", re.IGNORECASE)


class Thought:
    """A chain of steps with its evaluation."""

    def __init__(self, steps: list[str], final: bool = False, score: float = 0.0) -> None:
        self.steps, self.final, self.score = steps, final, score


class TreeOfThoughtsController(Controller):
    name = "tot"

    def __init__(
        self,
        generation_controller: Controller | None = None,
        reward_controller: Controller | None = None,
        *,
        max_depth: int = 3,
        num_thoughts_per_step: int = 3,
        selection_strategy: str = "best",
        branch_factor: int = 2,
        vote_samples: int = 3,
        step_stop: list[str] | None = None,
        step_max_tokens: int | None = 256,
        complete_answer: bool = True,
        is_final: FinalCheck = default_is_final,
        extractor: str | Extractor | None = "default",
        base_seed: int | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        require(max_depth >= 1, "max_depth", "must be at least 1")
        require(num_thoughts_per_step >= 1, "num_thoughts_per_step", "must be at least 1")
        require(branch_factor >= 1, "branch_factor", "must be at least 1")
        require(vote_samples >= 1, "vote_samples", "must be at least 1")
        require(
            selection_strategy in SELECTION_STRATEGIES,
            "selection_strategy",
            f"one of {', '.join(SELECTION_STRATEGIES)}",
        )
        self.generation_controller = generation_controller or NativeGenerationController()
        self.reward_controller = reward_controller or OutcomeRewardController()
        self.max_depth = max_depth
        self.num_thoughts_per_step = num_thoughts_per_step
        self.selection_strategy = selection_strategy
        self.branch_factor = branch_factor
        self.vote_samples = vote_samples
        self.step_stop = list(step_stop or DEFAULT_STEP_STOP)
        self.step_max_tokens = step_max_tokens
        self.complete_answer = complete_answer
        self.is_final = is_final
        self.extractor = get_extractor(extractor)
        self.base_seed = base_seed
        self.rng = random.Random(seed)
        if name is not None:
            self.name = name
        self.frontier: list[Thought] = []
        self.finished: list[Thought] = []
        self._output: Output | None = None

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        task = GenerationTask(input_str=prompt)
        yield from self.process([task], **kwargs)
        task.raise_for_status()
        assert self._output is not None
        return self._output

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        prompt = prompt_of(caller)
        self.frontier, self.finished, self._output = [Thought([])], [], None
        for depth in range(self.max_depth):
            expansions = yield from expand(
                caller,
                self.generation_controller,
                prompt,
                [t.steps for t in self.frontier],
                self.num_thoughts_per_step,
                self.step_stop,
                self.step_max_tokens,
                seed_offset=depth * self.branch_factor * self.num_thoughts_per_step,
                base_seed=self.base_seed,
            )
            candidates: list[Thought] = []
            for parent, children in zip(self.frontier, expansions, strict=False):
                for child in children:
                    text = step_text(child)
                    steps = [*parent.steps, text] if text else list(parent.steps)
                    candidates.append(Thought(steps, self.is_final(text, child.finish_reason)))
            if not candidates:
                break
            selected = yield from self._select(caller, prompt, candidates)
            self.finished += [t for t in selected if t.final]
            self.frontier = [t for t in selected if not t.final]
            emit_progress(
                method=self.label, depth=depth + 1, frontier=len(self.frontier), finished=len(self.finished)
            )
            if not self.frontier:
                break
        best = self._best()
        if best is None:
            fail_all(tasks, "tree of thoughts produced no thought (every generation failed)")
            return
        text = join_steps(best.steps)
        if self.complete_answer and not best.final:
            final = derive_generation(
                caller,
                input_str=continuation_prompt(prompt, best.steps),
                seed=branch_seed(caller, 10_000, self.base_seed),
            )
            yield ParallelProcess([self.generation_controller.clone()], [[final]])
            if final.ok and step_text(final):
                text = join_steps([*best.steps, step_text(final)])
        self._output = self._make_output(best, text)
        succeed(caller, text)
        set_method_result(caller, self._output.answer, score=best.score)

    def _select(self, caller: Task, prompt: str, candidates: list[Thought]) -> ControllerGen:
        if self.selection_strategy == "random":
            return self.rng.sample(candidates, min(self.branch_factor, len(candidates)))
        if self.selection_strategy == "best":
            scores = yield from score(self.reward_controller, prompt, [c.steps for c in candidates])
            for c, s in zip(candidates, scores or [0.0] * len(candidates), strict=False):
                c.score = s
        else:
            counts = yield from self._vote(caller, prompt, candidates)
            for c, n in zip(candidates, counts, strict=False):
                c.score = float(n)
        order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].score, i))
        return [candidates[i] for i in order[: self.branch_factor]]

    def _vote(self, caller: Task, prompt: str, candidates: list[Thought]) -> ControllerGen:
        """Ask the model ``vote_samples`` times which candidate is best; count the choices."""
        choices = "\n".join(f"Choice {i + 1}: {join_steps(c.steps)}" for i, c in enumerate(candidates))
        ballots = [
            derive_generation(
                caller,
                input_str=VOTE_PROMPT.format(prompt=prompt, choices=choices),
                seed=branch_seed(caller, 20_000 + i, self.base_seed),
                stop=None,
            )
            for i in range(self.vote_samples)
        ]
        yield ParallelProcess(
            isolated_clones(self.generation_controller, len(ballots)), [[b] for b in ballots]
        )
        counts = [0] * len(candidates)
        for ballot in ballots:
            match = _CHOICE.search(text_of(ballot)) if ballot.ok else None
            if match and 1 <= int(match.group(1)) <= len(candidates):
                counts[int(match.group(1)) - 1] += 1
        return counts

    def _best(self) -> Thought | None:
        pool = [t for t in self.finished if t.steps] or [t for t in self.frontier if t.steps]
        return max(pool, key=lambda t: t.score) if pool else None

    def _make_output(self, best: Thought, text: str) -> Output:
        return Output(
            text=text,
            answer=self.extractor(text),
            metadata={
                "score": best.score,
                "depth": len(best.steps),
                "finished": best.final,
                "strategy": self.selection_strategy,
            },
        )

    def best_so_far(self) -> Output | None:
        if self._output is not None:
            return self._output
        best = self._best()
        if best is None:
            return None
        out = self._make_output(best, join_steps(best.steps))
        out.metadata["partial"] = True
        return out
