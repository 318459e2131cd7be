"""Tree of thoughts: expand the frontier level by level (``num_thoughts_per_step`` thoughts per
node, all in parallel), keep ``branch_factor`` of them by reward (``best``), by model votes
(``vote``) or at random (``random``), until a thought gives an answer or ``max_depth``."""

from __future__ import annotations

import random
import re
from typing import Any, Unpack

from ..proto.tasks import Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.base import (
    Slot,
    branch_seed,
    derive_generation,
    fail_all,
    fan_out,
    prompt_of,
    require,
    set_method_result,
    succeed,
    text_of,
)
from .kit.results import SearchOutcome
from .kit.steps import StepOptions, StepSearch, join_steps, score
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


class TreeOfThoughtsController(StepSearch):
    name = "tot"
    kind = "tot"
    slots = {"generator": Slot("generation_controller"), "reward": Slot("reward_controller")}

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
        complete_answer: bool = True,
        seed: int = 0,
        **options: Unpack[StepOptions],
    ) -> None:
        require(max_depth >= 1, "max_depth", "must be at least 1")
        require(num_thoughts_per_step >= 1, "num_thoughts_per_step", "must be at least 1")
        require(branch_factor >= 1, "branch_factor", "must be at least 1")
        require(vote_samples >= 1, "vote_samples", "must be at least 1")
        require(
            selection_strategy in SELECTION_STRATEGIES,
            "selection_strategy",
            f"one of {', '.join(SELECTION_STRATEGIES)}",
        )
        super().__init__(
            generation_controller or NativeGenerationController(),
            reward_controller or OutcomeRewardController(),
            **options,
        )
        self.max_depth = max_depth
        self.num_thoughts_per_step = num_thoughts_per_step
        self.selection_strategy = selection_strategy
        self.branch_factor = branch_factor
        self.vote_samples = vote_samples
        self.complete_answer = complete_answer
        self.rng = random.Random(seed)
        self.frontier: list[Thought] = []
        self.finished: list[Thought] = []

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        prompt = prompt_of(caller)
        self.frontier, self.finished, self._output = [Thought([])], [], None
        for depth in range(self.max_depth):
            expansions = yield from self._expand(
                caller,
                prompt,
                [t.steps for t in self.frontier],
                self.num_thoughts_per_step,
                seed_offset=depth * self.branch_factor * self.num_thoughts_per_step,
            )
            candidates: list[Thought] = []
            for parent, children in zip(self.frontier, expansions, strict=False):
                for child in children:
                    candidates.append(Thought(*self._extend(parent.steps, child)))
            if not candidates:
                break
            selected = yield from self._select(caller, prompt, candidates)
            self.finished += [t for t in selected if t.final]
            self.frontier = [t for t in selected if not t.final]
            emit_progress(method=self.label, depth=depth + 1, frontier=len(self.frontier), finished=len(self.finished))
            if not self.frontier:
                break
        best = self._best()
        if best is None:
            fail_all(tasks, "tree of thoughts produced no thought (every generation failed)")
            return
        text = join_steps(best.steps)
        if self.complete_answer and not best.final:
            text = (yield from self._complete(caller, prompt, best.steps)) or text
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
        yield fan_out(self.generation_controller, ballots)
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
            result=SearchOutcome(
                score=best.score, depth=len(best.steps), finished=best.final, strategy=self.selection_strategy
            ),
        )

    def _partial(self) -> Output | None:
        best = self._best()
        if best is None:
            return None
        out = self._make_output(best, join_steps(best.steps))
        out.metadata["partial"] = True
        return out
