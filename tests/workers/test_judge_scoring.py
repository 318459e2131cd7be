from __future__ import annotations

import math

import pytest

from scaffolding_nats.proto.tasks import TokenLogprob, TopLogprob
from scaffolding_nats.workers.judge_reward_worker import split_steps, yes_no_score


def _first(top: dict[str, float]) -> list[TokenLogprob]:
    token = max(top, key=lambda t: top[t])
    alts = [TopLogprob(token=t, logprob=math.log(p)) for t, p in top.items()]
    return [TokenLogprob(token=token, logprob=math.log(top[token]), top=alts)]


def test_score_is_yes_over_yes_plus_no() -> None:
    assert yes_no_score(_first({"Yes": 0.6, "No": 0.2, "Maybe": 0.2})) == pytest.approx(0.75)


def test_case_and_spacing_variants_add_up() -> None:
    assert yes_no_score(_first({"Yes": 0.3, " yes": 0.3, "NO": 0.2})) == pytest.approx(0.75)


def test_one_sided_and_missing_answers() -> None:
    assert yes_no_score(_first({"Yes": 0.9, "The": 0.1})) == pytest.approx(1.0)
    assert yes_no_score(_first({"No": 0.9, "The": 0.1})) == pytest.approx(0.0)
    assert yes_no_score(_first({"The": 0.9, "A": 0.1})) is None
    assert yes_no_score([]) is None


def test_without_alternatives_the_sampled_token_decides() -> None:
    assert yes_no_score([TokenLogprob(token="Yes", logprob=-0.1)]) == 1.0


def test_steps_split_by_paragraph_then_line() -> None:
    assert split_steps("a\n\nb\n\nc") == ["a", "b", "c"]
    assert split_steps("a\nb") == ["a", "b"]
    assert split_steps("one") == ["one"]
