"""Reward controllers: score many candidates in one batched ``RewardTask`` (worker tag
"reward"). Outcome mode scores whole answers; process mode scores every reasoning step."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..proto.tasks import RewardTask, Task
from ..runtime.controller import Controller, ControllerGen
from .kit.base import prompt_of, require, text_of
from .kit.confidence import mean_logprob_weight

StepSplitter = Callable[[str], list[str]]

_STEP_LINE = re.compile(r"^\s*(?:\*\*)?step\s*\d+\s*[:.)]", re.IGNORECASE)


def split_steps(text: str) -> list[str]:
    """Reasoning steps: paragraphs separated by blank lines, and a new step at each
    "Step N:" line."""
    steps: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip() or _STEP_LINE.match(line):
            if current:
                steps.append("\n".join(current).strip())
                current = []
            if not line.strip():
                continue
        current.append(line)
    if current:
        steps.append("\n".join(current).strip())
    return [s for s in steps if s]


AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,
    "last": lambda s: s[-1],
    "mean": lambda s: sum(s) / len(s),
    "prod": lambda s: _prod(s),
}


def _prod(scores: Sequence[float]) -> float:
    out = 1.0
    for s in scores:
        out *= s
    return out


@runtime_checkable
class RewardScorer(Protocol):
    """What a reward slot offers once its ``process`` has run: ``scores``, one per candidate
    (``None`` when scoring failed), and the ``step_splitter`` of process-reward scorers; and
    ``start_timeout``, how long its reward task may wait for a worker (see ``Task``)."""

    scores: list[float] | None
    step_splitter: StepSplitter | None
    start_timeout: float | None


def scores_of(controller: Controller) -> list[float] | None:
    """The scores a reward sub-controller left; ``None`` if it failed or is not a scorer."""
    return controller.scores if isinstance(controller, RewardScorer) else None


class _RewardBase(Controller):
    """Common shape: ``process(tasks)`` scores the texts of ``tasks`` (generation results) and
    leaves ``self.scores`` (one per task, ``None`` if scoring failed) and ``self.task``."""

    name = "reward"

    def __init__(
        self, *, model: str | None = None, worker_tag: str = "reward", name: str | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.worker_tag = worker_tag
        self.scores: list[float] | None = None
        self.step_splitter: StepSplitter | None = None
        self.task: RewardTask | None = None
        self.start_timeout: float | None = None
        """How long its reward task may wait for a reward worker (set by a method that can
        do without the scores; see ``Task.start_timeout``)."""
        if name is not None:
            self.name = name

    def _finish(self, tasks: list[Task], scores: list[float] | None) -> None:
        self.scores = scores
        if scores is not None:
            for task, score in zip(tasks, scores, strict=False):
                task.metadata["reward"] = score


class OutcomeRewardController(_RewardBase):
    """One reward task for all candidates; one score each."""

    kind = "outcome_reward"

    def process(self, tasks: list[Task], prompt: str | None = None, **kwargs: Any) -> ControllerGen:
        self.scores = None
        if not tasks:
            self.scores = []
            return
        reward = RewardTask(
            mode="outcome",
            prompt=prompt if prompt is not None else prompt_of(tasks[0]),
            candidates=[text_of(t) for t in tasks],
            model=self.model,
            worker_tag=self.worker_tag,
            start_timeout=self.start_timeout,
        )
        self.task = reward
        yield [reward]
        ok = reward.ok and reward.scores is not None and len(reward.scores) == len(tasks)
        self._finish(tasks, [float(s) for s in reward.scores or []] if ok else None)


class LogprobRewardController(_RewardBase):
    """The generator's own confidence as the reward: each candidate scores ``exp(mean token
    log-prob)`` of its trace, with no model call. A method that samples for it asks each sample
    for ``sample_logprobs`` (top-1) log-probs; a candidate without them fails the scoring."""

    kind = "logprob_reward"
    sample_logprobs = 1

    def process(self, tasks: list[Task], prompt: str | None = None, **kwargs: Any) -> ControllerGen:
        scores = [mean_logprob_weight(t) for t in tasks]
        self._finish(tasks, None if None in scores else [s for s in scores if s is not None])
        return
        yield  # a generator that yields no task


class ProcessRewardController(_RewardBase):
    """One reward task for all candidates, each split into steps; a candidate's score is an
    aggregate of its step scores (``min`` by default: a chain is as good as its worst step)."""

    kind = "process_reward"

    def __init__(
        self,
        *,
        step_splitter: StepSplitter = split_steps,
        aggregate: str = "min",
        model: str | None = None,
        worker_tag: str = "reward",
        name: str | None = None,
    ) -> None:
        super().__init__(model=model, worker_tag=worker_tag, name=name)
        require(aggregate in AGGREGATES, "aggregate", f"one of {sorted(AGGREGATES)}")
        self.step_splitter = step_splitter
        self.aggregate = aggregate
        self.step_scores: list[list[float]] | None = None

    def process(
        self,
        tasks: list[Task],
        prompt: str | None = None,
        steps: list[list[str]] | None = None,
        **kwargs: Any,
    ) -> ControllerGen:
        self.scores = self.step_scores = None
        if not tasks:
            self.scores = []
            return
        split = self.step_splitter or split_steps
        all_steps = steps if steps is not None else [split(text_of(t)) for t in tasks]
        reward = RewardTask(
            mode="process",
            prompt=prompt if prompt is not None else prompt_of(tasks[0]),
            candidates=[text_of(t) for t in tasks],
            steps=all_steps,
            model=self.model,
            worker_tag=self.worker_tag,
            start_timeout=self.start_timeout,
        )
        self.task = reward
        yield [reward]
        per_step = reward.step_scores
        if not reward.ok or per_step is None or len(per_step) != len(tasks):
            self._finish(tasks, None)
            return
        self.step_scores = [[float(s) for s in row] for row in per_step]
        agg = AGGREGATES[self.aggregate]
        scores = []
        for i, row in enumerate(self.step_scores):
            fallback = reward.scores[i] if reward.scores and i < len(reward.scores) else 0.0
            scores.append(agg(row) if row else float(fallback))
        self._finish(tasks, scores)
