"""Best-of-N: N independent samples scored in one batch by a reward model; the best wins."""

from __future__ import annotations

from typing import Any, Unpack

from ..proto.tasks import Task
from ..runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from .kit.base import (
    SamplingMethod,
    SamplingOptions,
    Slot,
    best_partial,
    fail_all,
    prompt_of,
    require,
    set_method_result,
    text_of,
)
from .kit.results import ScoredOutcome
from .native import NativeGenerationController
from .reward import OutcomeRewardController, RewardScorer, scores_of


class BestOfNController(SamplingMethod):
    """Samples with ``sample_num`` clones of a sampler (never one shared instance), scores the
    successful ones with ``reward_controller`` and lands the best sample on the caller's task.
    If scoring fails the first successful sample is returned (``fallback: reward_failed``),
    also when no reward worker takes the scoring task within ``reward_wait`` seconds (a reward
    queue provisioned for a worker that is not running; None waits for the task deadline)."""

    name = "best_of_n"
    kind = "best_of_n"
    slots = {
        "sampler": Slot("sample_controller", default={"method": "native"}),
        "reward": Slot("reward_controller", default={"method": "outcome_reward"}),
    }

    def __init__(
        self,
        sample_controller: Controller | None = None,
        reward_controller: Controller | None = None,
        sample_num: int = 4,
        *,
        reward_wait: float | None = 30.0,
        **options: Unpack[SamplingOptions],
    ) -> None:
        super().__init__(sample_controller or NativeGenerationController(), sample_num, **options)
        require(reward_wait is None or reward_wait > 0, "reward_wait", "must be a positive number of seconds")
        self.reward_wait = reward_wait
        self.reward_controller = reward_controller or OutcomeRewardController()
        if wanted := getattr(self.reward_controller, "sample_logprobs", None):
            self.sample_overrides = {"num_logprobs": wanted}
        self._scores: list[float] | None = None

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output, self._scores = None, None
        ok = yield from self._sample(caller, kwargs)
        if not ok:
            fail_all(tasks, f"all {self.sample_num} samples failed", cause=self._samples[0])
            return
        reward = self.reward_controller.clone()
        if isinstance(reward, RewardScorer) and reward.start_timeout is None:
            reward.start_timeout = self.reward_wait
        yield ParallelProcess([reward], [[self._samples[i] for i in ok]], [{"prompt": prompt_of(caller)}])
        scores = scores_of(reward)
        all_scores: list[float | None] = [None] * self.sample_num
        if scores is not None:
            for i, s in zip(ok, scores, strict=False):
                all_scores[i] = s
            self._scores = scores
        output = self._choose(ok, all_scores if scores is not None else None)
        best = self._samples[output.metadata["index"]]
        caller.copy_results_from(best)
        set_method_result(caller, output.answer, score=output.metadata.get("score"))
        self._output = output

    def _choose(
        self, ok: list[int], scores: list[float | None] | None, texts: list[str] | None = None
    ) -> Output:
        texts = texts if texts is not None else [text_of(t) for t in self._samples]
        outcome = ScoredOutcome(num_samples=self.sample_num, num_succeeded=len(ok))
        if scores is None:
            outcome.index, outcome.fallback = ok[0], "reward_failed"
        else:
            outcome.index = max(ok, key=lambda i: (scores[i], -i))
            outcome.score, outcome.scores = scores[outcome.index], list(scores)
        text = texts[outcome.index]
        return Output(
            text=text,
            answer=self.extractor(text),
            finish_reason=getattr(self._samples[outcome.index], "finish_reason", None),
            result=outcome,
        )

    def _partial(self) -> Output | None:
        """Best scored sample if scoring finished, else the first finished (or partial) one."""
        texts: list[str] = []
        ok: list[int] = []
        for i, (task, branch) in enumerate(zip(self._samples, self._branches, strict=False)):
            partial = None if task.ok else best_partial(branch)
            texts.append(text_of(task) if task.ok else (partial.text if partial else ""))
            if task.ok or partial is not None:
                ok.append(i)
        if not ok:
            return None
        output = self._choose(ok, None, texts)
        output.result.fallback = output.metadata["fallback"] = "unscored"
        return output
