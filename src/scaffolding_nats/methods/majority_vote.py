"""Majority vote (self-consistency): N independent samples, the most frequent answer wins;
optionally each sample's vote is weighted by the model's confidence in its own trace."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Unpack

from ..proto.tasks import GenerationTask, Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.answers import states_answer
from .kit.base import SamplingMethod, SamplingOptions, Slot, best_partial, cut_off, fail_all, set_method_result, text_of
from .kit.confidence import mean_logprob_weight
from .kit.results import VoteOutcome
from .kit.voting import vote, voted_output
from .native import NativeGenerationController

Weighting = Literal["none", "mean_logprob"]


def fill_missing(weights: Sequence[float | None]) -> list[float] | None:
    """Weights for a vote: a sample without log-probs gets the mean of the others' weights;
    with none at all the vote is unweighted (``None``)."""
    known = [w for w in weights if w is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    return [mean if w is None else w for w in weights]


class MajorityVoteController(SamplingMethod):
    """Runs ``sample_num`` clones of any sampling sub-controller as one parallel group and
    votes on their extracted answers. Failed samples abstain; when no sample has an answer
    the first successful sample is returned (``metadata["fallback"] == "no_answer"``).

    ``weighting="mean_logprob"`` weights each vote by its trace's ``exp(mean token log-prob)``
    (so confidence also breaks ties, instead of the first sample seen); the samples then ask
    the backend for the fewest log-probs there are (top-1: the sampled token's own)."""

    name = "majority_vote"
    kind = "majority_vote"
    slots = {"sampler": Slot("sample_controller", default={"method": "native"})}

    def __init__(
        self,
        sample_controller: Controller | None = None,
        sample_num: int = 8,
        *,
        weighting: Weighting = "none",
        **options: Unpack[SamplingOptions],
    ) -> None:
        super().__init__(sample_controller or NativeGenerationController(), sample_num, **options)
        self.weighting = weighting
        if weighting != "none":
            self.sample_overrides = {"num_logprobs": 1}

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output = None
        ok = yield from self._sample(caller, kwargs)
        emit_progress(method=self.label, samples=len(self._samples), succeeded=len(ok))
        if not ok:
            fail_all(tasks, f"all {self.sample_num} samples failed", cause=self._samples[0])
            return
        output = self._decide(self._samples)
        assert output is not None
        winner = self._samples[output.metadata["index"]]
        caller.copy_results_from(winner)
        set_method_result(caller, output.answer, votes=output.metadata["votes"])
        self._output = output

    def _decide(
        self, samples: list[GenerationTask], partial: list[Output | None] | None = None
    ) -> Output | None:
        """Vote over what succeeded (plus, when the budget ran out, the branches' partials)."""
        texts: list[str | None] = []
        for i, task in enumerate(samples):
            if task.ok:
                texts.append(text_of(task))
            elif partial is not None and partial[i] is not None:
                texts.append(partial[i].text)  # type: ignore[union-attr]
            else:
                texts.append(None)
        answers = [
            self.extractor(t) if t is not None and (not cut_off(task) or states_answer(t)) else None
            for t, task in zip(texts, samples, strict=True)
        ]
        raw_weights: list[float | None] | None = None
        if self.weighting == "mean_logprob":
            raw_weights = [mean_logprob_weight(t) if t.ok else None for t in samples]
        weights = fill_missing(raw_weights) if raw_weights is not None else None
        result = vote(answers, weights)
        outcome = VoteOutcome(
            num_samples=len(samples),
            num_succeeded=sum(t is not None for t in texts),
            num_answered=sum(a is not None for a in answers),
            answers=list(answers),
            votes={k: round(v, 6) if weights else int(v) for k, v in result.tally.items()},
            weights=[round(w, 6) if w is not None else None for w in raw_weights] if raw_weights else None,
        )
        return voted_output(result, texts, outcome)

    def _partial(self) -> Output | None:
        """The vote over the samples finished when a budget ran out."""
        partial = [best_partial(b) for b in self._branches]
        return self._decide(self._samples, partial)
