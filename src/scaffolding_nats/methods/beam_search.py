"""Beam search over reasoning steps, guided by a process reward model: each step expands
every live beam a few ways, scores the chains and keeps the best ``beam_width``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Unpack

from ..proto.tasks import Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.base import Slot, fail_all, prompt_of, require, set_method_result, succeed
from .kit.results import SearchOutcome
from .kit.steps import StepOptions, StepSearch, join_steps, score
from .native import NativeGenerationController
from .reward import ProcessRewardController


@dataclass
class Beam:
    steps: list[str] = field(default_factory=list)
    score: float = 0.0
    final: bool = False

    @property
    def text(self) -> str:
        return join_steps(self.steps)


class BeamSearchController(StepSearch):
    name = "beam_search"
    kind = "beam_search"
    slots = {
        "generator": Slot("generation_controller"),
        "reward": Slot("reward_controller", default={"method": "process_reward"}),
    }

    def __init__(
        self,
        generation_controller: Controller | None = None,
        reward_controller: Controller | None = None,
        *,
        beam_width: int = 2,
        expansions_per_beam: int = 2,
        max_steps: int = 8,
        **options: Unpack[StepOptions],
    ) -> None:
        require(beam_width >= 1, "beam_width", "must be at least 1")
        require(expansions_per_beam >= 1, "expansions_per_beam", "must be at least 1")
        require(max_steps >= 1, "max_steps", "must be at least 1")
        super().__init__(
            generation_controller or NativeGenerationController(),
            reward_controller or ProcessRewardController(),
            **options,
        )
        self.beam_width = beam_width
        self.expansions_per_beam = expansions_per_beam
        self.max_steps = max_steps
        self.beams: list[Beam] = []

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        prompt = prompt_of(caller)
        self.beams, self._output = [Beam()], None
        for step in range(self.max_steps):
            live = [b for b in self.beams if not b.final]
            if not live:
                break
            expansions = yield from self._expand(
                caller,
                prompt,
                [b.steps for b in live],
                self.expansions_per_beam,
                seed_offset=step * self.beam_width * self.expansions_per_beam,
            )
            candidates = [b for b in self.beams if b.final]
            for beam, children in zip(live, expansions, strict=False):
                for child in children:
                    steps, final = self._extend(beam.steps, child)
                    candidates.append(Beam(steps, beam.score, final))
            if not candidates or all(not c.steps for c in candidates):
                break
            kept = {id(b) for b in self.beams}
            fresh = [c for c in candidates if id(c) not in kept]
            scores = yield from score(self.reward_controller, prompt, [c.steps for c in fresh])
            if scores is not None:
                for c, s in zip(fresh, scores, strict=False):
                    c.score = s
            candidates.sort(key=lambda c: -c.score)
            self.beams = candidates[: self.beam_width]
            emit_progress(method=self.label, step=step + 1, best_score=self.beams[0].score)
        if not any(b.steps for b in self.beams):
            fail_all(tasks, "beam search produced no step (every generation failed)")
            return
        self._output = self._result()
        succeed(caller, self._output.text)
        set_method_result(caller, self._output.answer, score=self._output.metadata["score"])

    def _result(self) -> Output:
        finals = [b for b in self.beams if b.final and b.steps]
        pool = finals or [b for b in self.beams if b.steps] or self.beams
        best = max(pool, key=lambda b: b.score)
        return Output(
            text=best.text,
            answer=self.extractor(best.text),
            result=SearchOutcome(
                score=best.score,
                steps=len(best.steps),
                finished=best.final,
                beams=[{"score": b.score, "final": b.final} for b in self.beams],
            ),
        )

    def _partial(self) -> Output | None:
        if not any(b.steps for b in self.beams):
            return None
        out = self._result()
        out.metadata["partial"] = True
        return out
