"""Counting votes over extracted answers: plain or weighted, ties to the earliest sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ...runtime.controller import Output
from .answers import Normalizer, normalize_answer
from .results import VoteOutcome


@dataclass
class VoteResult:
    """The winner (``index`` of its first sample, raw ``answer``) and the tally by answer key."""

    index: int | None
    answer: str | None
    key: str | None
    tally: dict[str, float] = field(default_factory=dict)


def vote(
    answers: Sequence[str | None],
    weights: Sequence[float] | None = None,
    normalizer: Normalizer = normalize_answer,
) -> VoteResult:
    """Weighted plurality over ``answers`` (``None`` entries abstain)."""
    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = normalizer(answer)
        weight = 1.0 if weights is None else float(weights[i])
        tally[key] = tally.get(key, 0.0) + weight
        first.setdefault(key, i)
    if not tally:
        return VoteResult(None, None, None, {})
    key = max(tally, key=lambda k: (tally[k], -first[k]))
    index = first[key]
    return VoteResult(index, answers[index], key, tally)


def voted_output(result: VoteResult, texts: Sequence[str | None], outcome: VoteOutcome) -> Output | None:
    """The winner's text; with no answer at all, the first sample that has text, marked
    ``no_answer`` (a vote must not fail because the model never stated one). ``None`` when no
    sample has text, for the caller to fail."""
    if result.index is None:
        first = next((i for i, t in enumerate(texts) if t is not None), None)
        if first is None:
            return None
        outcome.index, outcome.fallback = first, "no_answer"
        return Output(text=texts[first] or "", answer=None, result=outcome)
    outcome.index = result.index
    return Output(text=texts[result.index] or "", answer=result.answer, result=outcome)
