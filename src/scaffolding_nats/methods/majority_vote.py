"""Majority vote (self-consistency): N independent samples, the most frequent answer wins."""

from __future__ import annotations

from typing import Any

from ..proto.tasks import GenerationTask, Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from ._common import (
    best_partial,
    branch_seed,
    derive_generation,
    fail_all,
    isolated_clones,
    require,
    set_method_result,
    text_of,
)
from .answers import Extractor, get_extractor
from .native import NativeGenerationController
from .voting import vote


class MajorityVoteController(Controller):
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
        super().__init__()
        require(sample_num >= 1, "sample_num", "must be at least 1")
        self.sample_controller = sample_controller or NativeGenerationController()
        self.sample_num = sample_num
        self.extractor = get_extractor(extractor)
        self.base_seed = base_seed
        if name is not None:
            self.name = name
        self._samples: list[GenerationTask] = []
        self._branches: list[Controller] = []
        self._output: Output | None = None

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        task = GenerationTask(input_str=prompt)
        yield from self.process([task], **kwargs)
        task.raise_for_status()
        assert self._output is not None
        return self._output

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output = None
        self._samples = [
            derive_generation(caller, seed=branch_seed(caller, i, self.base_seed))
            for i in range(self.sample_num)
        ]
        self._branches = isolated_clones(self.sample_controller, self.sample_num)
        yield ParallelProcess(
            self._branches, [[t] for t in self._samples], [dict(kwargs) for _ in self._samples]
        )
        ok = [t for t in self._samples if t.ok]
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

    def best_so_far(self) -> Output | None:
        """The vote over the samples finished when a budget ran out."""
        if self._output is not None:
            return self._output
        partial = [best_partial(b) for b in self._branches]
        return self._decide(self._samples, partial)
