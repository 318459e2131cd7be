"""A quorum vote: sample in rounds and stop as soon as one answer holds a clear majority of the
samples so far, instead of always paying for all N (the served ``adaptive_vote`` is the
built-in, statistically stopped version of the same idea).

Written only against the public ``scaffolding_nats.methods.base`` API: it declares its
``kind`` and ``slots``, derives seeded samples, runs them as isolated parallel branches and
returns a typed ``VoteOutcome``."""

from __future__ import annotations

from typing import Any

from scaffolding_nats.methods.base import (
    ControllerGen,
    Output,
    SamplingMethod,
    Slot,
    VoteOutcome,
    branch_seed,
    derive_generation,
    fail_all,
    fan_out,
    require,
    set_method_result,
    text_of,
)
from scaffolding_nats.methods.kit.voting import vote
from scaffolding_nats.methods.native import NativeGenerationController
from scaffolding_nats.proto.tasks import Task
from scaffolding_nats.runtime.controller import Controller


class QuorumVoteController(SamplingMethod):
    """Rounds of ``round_size`` samples, up to ``sample_num``; stops once the leading answer
    has at least ``stop_fraction`` of the answered samples (and at least ``round_size``)."""

    name = "quorum_vote"
    kind = "quorum_vote"
    slots = {"sampler": Slot("sample_controller", default={"method": "native"})}

    def __init__(
        self,
        sample_controller: Controller | None = None,
        sample_num: int = 8,
        *,
        round_size: int = 2,
        stop_fraction: float = 0.75,
        extractor: str | None = "number",
        base_seed: int | None = None,
        name: str | None = None,
    ) -> None:
        require(round_size >= 1, "round_size", "must be at least 1")
        require(0.5 < stop_fraction <= 1.0, "stop_fraction", "must be in (0.5, 1]")
        super().__init__(sample_controller or NativeGenerationController(), sample_num, extractor, base_seed, name)
        self.round_size = round_size
        self.stop_fraction = stop_fraction

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output, self._samples = None, []
        while len(self._samples) < self.sample_num:
            start = len(self._samples)
            batch = [
                derive_generation(caller, seed=branch_seed(caller, i, self.base_seed))
                for i in range(start, min(start + self.round_size, self.sample_num))
            ]
            self._samples.extend(batch)
            yield fan_out(self.sample_controller, batch, kwargs)
            answers = [self.extractor(text_of(t)) if t.ok else None for t in self._samples]
            result = vote(answers)
            answered = sum(a is not None for a in answers)
            leading = result.tally.get(result.key, 0.0) if result.key is not None else 0.0
            if answered >= self.round_size and leading >= self.stop_fraction * answered:
                break
        answers = [self.extractor(text_of(t)) if t.ok else None for t in self._samples]
        result = vote(answers)
        if result.index is None:
            fail_all(tasks, f"no answer in {len(self._samples)} samples", cause=self._samples[0])
            return
        outcome = VoteOutcome(
            index=result.index,
            num_samples=len(self._samples),
            num_succeeded=sum(t.ok for t in self._samples),
            num_answered=sum(a is not None for a in answers),
            votes={k: int(v) for k, v in result.tally.items()},
        )
        winner = self._samples[result.index]
        caller.copy_results_from(winner)
        set_method_result(caller, result.answer, **outcome.to_metadata())
        self._output = Output(text=text_of(winner), answer=result.answer, result=outcome)
