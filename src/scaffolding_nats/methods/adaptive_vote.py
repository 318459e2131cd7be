"""Adaptive self-consistency: sample in small waves and stop once the vote is decided, instead
of always paying for all N samples (Aggarwal et al. 2023, "Let's Sample Step by Step"; ESC).

After each wave the samples so far are voted. Sampling stops when

* the leader cannot be overtaken: its lead over the runner-up is larger than the samples left
  (the full vote would pick it whatever they say; so the answer equals vote@N's), or
* the Beta stopping rule says so: with the leader's ``a`` and the runner-up's ``b`` votes, the
  posterior probability that the leader's share beats the runner-up's, ``P(X > 1/2)`` for
  ``X ~ Beta(a + 1, b + 1)``, reaches ``confidence`` (4 agreeing of 4 gives 0.97; 3 of 3, 0.94).

Samples are seeded per index exactly as ``majority_vote``'s, so an adaptive vote draws a prefix
of the very samples vote@N would draw (the first waves of both are the same samples)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Unpack

from ..proto.tasks import GenerationTask, Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.answers import states_answer
from .kit.base import (
    SamplingMethod,
    SamplingOptions,
    Slot,
    best_partial,
    branch_seed,
    cut_off,
    derive_generation,
    fail_all,
    fan_out,
    require,
    set_method_result,
    text_of,
)
from .kit.results import VoteOutcome
from .kit.voting import vote, voted_output
from .native import NativeGenerationController

StopRule = Literal["unbeatable", "beta", "either"]


def beta_confidence(leader: int, runner_up: int) -> float:
    """``P(X > 1/2)`` for ``X ~ Beta(leader + 1, runner_up + 1)``: how sure a uniform prior over
    the two leading answers' split is that the leader is the more likely one. For integer
    parameters it is a binomial tail: ``P(Binomial(a + b + 1, 1/2) <= a)``."""
    n = leader + runner_up + 1
    return sum(math.comb(n, k) for k in range(leader + 1)) / 2**n


@dataclass
class AdaptiveVoteOutcome(VoteOutcome):
    """A vote that may have stopped early: how many waves ran, why it stopped, the samples it
    did not draw (``samples_saved``) and the stopping rule's confidence at the end."""

    waves: int = 0
    stop: str | None = None
    samples_saved: int = 0
    confidence: float | None = None


class AdaptiveVoteController(SamplingMethod):
    """Waves of ``wave_size`` samples (the first of ``first_wave``), up to ``sample_num``,
    voted after each wave; stops by ``stop_rule`` (``unbeatable``, ``beta`` or ``either``, the
    default) once at least ``min_samples`` have answered. Failed samples and traces cut off
    before stating an answer abstain, as in ``majority_vote``."""

    name = "adaptive_vote"
    kind = "adaptive_vote"
    slots = {"sampler": Slot("sample_controller", default={"method": "native"})}

    def __init__(
        self,
        sample_controller: Controller | None = None,
        sample_num: int = 8,
        *,
        wave_size: int = 2,
        first_wave: int | None = None,
        stop_rule: StopRule = "either",
        confidence: float = 0.95,
        min_samples: int = 2,
        **options: Unpack[SamplingOptions],
    ) -> None:
        require(wave_size >= 1, "wave_size", "must be at least 1")
        require(first_wave is None or first_wave >= 1, "first_wave", "must be at least 1")
        require(0.5 < confidence < 1.0, "confidence", "must be in (0.5, 1)")
        require(min_samples >= 1, "min_samples", "must be at least 1")
        super().__init__(sample_controller or NativeGenerationController(), sample_num, **options)
        self.wave_size = wave_size
        self.first_wave = first_wave or wave_size
        self.stop_rule = stop_rule
        self.confidence = confidence
        self.min_samples = min_samples

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output, self._samples, self._branches = None, [], []
        waves, stop = 0, "all_samples"
        while len(self._samples) < self.sample_num:
            start = len(self._samples)
            size = self.first_wave if start == 0 else self.wave_size
            wave = [
                derive_generation(caller, seed=branch_seed(caller, i, self.base_seed), **self.sample_overrides)
                for i in range(start, min(start + size, self.sample_num))
            ]
            self._samples.extend(wave)
            group = fan_out(self.sample_controller, wave, kwargs)
            self._branches.extend(group.controllers)
            yield group
            waves += 1
            decided = self._decided(self._answers(self._samples))
            emit_progress(method=self.label, samples=len(self._samples), wave=waves, decided=decided)
            if decided is not None:
                stop = decided
                break
        ok = [t for t in self._samples if t.ok]
        if not ok:
            fail_all(tasks, f"all {len(self._samples)} samples failed", cause=self._samples[0])
            return
        output = self._decide(self._samples, waves, stop)
        assert output is not None
        caller.copy_results_from(self._samples[output.metadata["index"]])
        set_method_result(caller, output.answer, **output.result.to_metadata())
        self._output = output

    def _answers(self, samples: list[GenerationTask], texts: list[str | None] | None = None) -> list[str | None]:
        if texts is None:
            texts = [text_of(t) if t.ok else None for t in samples]
        return [
            self.extractor(text) if text is not None and (not cut_off(task) or states_answer(text)) else None
            for text, task in zip(texts, samples, strict=True)
        ]

    def _decided(self, answers: list[str | None]) -> str | None:
        """Why to stop now (``unbeatable``/``beta``), or ``None`` to draw another wave."""
        counts = sorted(vote(answers).tally.values(), reverse=True)
        answered = sum(a is not None for a in answers)
        if not counts or answered < self.min_samples:
            return None
        leader = int(counts[0])
        runner_up = int(counts[1]) if len(counts) > 1 else 0
        left = self.sample_num - len(answers)
        if self.stop_rule in ("unbeatable", "either") and leader - runner_up > left:
            return "unbeatable"
        if self.stop_rule in ("beta", "either") and beta_confidence(leader, runner_up) >= self.confidence:
            return "beta"
        return None

    def _decide(
        self, samples: list[GenerationTask], waves: int, stop: str, texts: list[str | None] | None = None
    ) -> Output | None:
        if texts is None:
            texts = [text_of(t) if t.ok else None for t in samples]
        answers = self._answers(samples, texts)
        result = vote(answers)
        counts = sorted(result.tally.values(), reverse=True)
        outcome = AdaptiveVoteOutcome(
            num_samples=len(samples),
            num_succeeded=sum(t is not None for t in texts),
            num_answered=sum(a is not None for a in answers),
            answers=list(answers),
            votes={k: int(v) for k, v in result.tally.items()},
            waves=waves,
            stop=stop,
            samples_saved=self.sample_num - len(samples),
            confidence=round(beta_confidence(int(counts[0]), int(counts[1]) if len(counts) > 1 else 0), 4)
            if counts
            else None,
        )
        return voted_output(result, texts, outcome)

    def _partial(self) -> Output | None:
        """The vote over what finished when a budget ran out."""
        partial = [best_partial(b) for b in self._branches]
        texts = [
            text_of(t) if t.ok else (p.text if p is not None else None)
            for t, p in zip(self._samples, partial, strict=False)
        ]
        return self._decide(self._samples[: len(texts)], 0, "budget", texts)
