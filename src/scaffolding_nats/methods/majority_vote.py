"""Majority vote (self-consistency): N independent samples, the most frequent answer wins."""

from __future__ import annotations

from typing import Any

from ..proto.tasks import GenerationTask, Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from ._common import SamplingMethod, best_partial, fail_all, set_method_result, text_of
from .answers import Extractor
from .native import NativeGenerationController
from .voting import vote


class MajorityVoteController(SamplingMethod):
    """Runs ``sample_num`` clones of any sampling sub-controller as one parallel group and
    votes on their extracted answers. Failed samples abstain; when no sample has an answer
    the first successful sample is returned (``metadata["fallback"] == "no_answer"``)."""

    name = "majority_vote"

    def __init__(
        self,
        sample_controller: Controller | None = None,
        sample_num: int = 8,
        *,
        extractor: str | Extractor | None = "default",
        base_seed: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(sample_controller or NativeGenerationController(), sample_num, extractor, base_seed, name)

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
        answers = [self.extractor(t) if t is not None else None for t in texts]
        result = vote(answers)
        meta: dict[str, Any] = {
            "num_samples": len(samples),
            "num_succeeded": sum(t is not None for t in texts),
            "num_answered": sum(a is not None for a in answers),
            "votes": {k: int(v) for k, v in result.tally.items()},
        }
        if result.index is None:
            first = next((i for i, t in enumerate(texts) if t is not None), None)
            if first is None:
                return None
            meta.update(index=first, fallback="no_answer")
            return Output(text=texts[first] or "", answer=None, metadata=meta)
        meta["index"] = result.index
        return Output(text=texts[result.index] or "", answer=result.answer, metadata=meta)

    def _partial(self) -> Output | None:
        """The vote over the samples finished when a budget ran out."""
        partial = [best_partial(b) for b in self._branches]
        return self._decide(self._samples, partial)
