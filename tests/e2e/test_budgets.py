"""Budgets end jobs early with the method's best answer so far and say which budget did it."""

from __future__ import annotations

import pytest

from scaffolding_nats.proto import Budget, Job, SamplingParams

from .conftest import Stack

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

LONG_QUESTION = [
    {"role": "user", "content": "Explain step by step how to multiply 23 by 19, showing every partial product."}
]
NEVER_CERTAIN = {"chunk_size": 16, "certainty_threshold": 50, "probe_max_tokens": 4}
"""Dynasor that probes after every chunk but never exits early, so a budget must stop it."""


async def test_token_budget_stops_a_long_chain_of_thought(stack: Stack) -> None:
    job = Job(
        method="dynasor",
        messages=LONG_QUESTION,
        params=NEVER_CERTAIN,
        sampling=SamplingParams(max_tokens=400, temperature=0.0),
        budget=Budget(max_tokens=48),
    )
    result, _ = await stack.run(job)
    assert result.stop_reason == "budget_tokens"
    assert result.metadata["budget"]["budget"] == "tokens"
    assert result.text.strip()
    # A hard cap: the stream reserved the whole budget at dispatch, so the first probe that
    # would overrun it is refused and the job ends with the text so far.
    assert 0 < result.usage.completion_tokens <= 48
    assert "dynasor" in result.usage_by_controller  # probes are refused once the chain holds the budget


async def test_task_budget_returns_the_unscored_best_of_n(stack: Stack) -> None:
    """Two samples use up ``max_tasks=2``; the judge never runs, the first sample stands."""
    job = Job(
        method="best_of_n",
        messages=[{"role": "user", "content": "What is 6 * 7?"}],
        params={"sample_num": 2},
        sampling=SamplingParams(max_tokens=24, temperature=0.7),
        budget=Budget(max_tasks=2),
    )
    result, _ = await stack.run(job)
    assert result.stop_reason == "budget_tasks"
    assert result.metadata["fallback"] == "unscored"
    assert result.num_tasks == 2 and set(result.usage_by_controller) == {"generation"}
    assert result.text.strip() and result.usage.completion_tokens > 0


async def test_time_budget_returns_the_text_so_far(stack: Stack) -> None:
    job = Job(
        method="dynasor",
        messages=LONG_QUESTION,
        params=NEVER_CERTAIN,
        sampling=SamplingParams(max_tokens=1000, temperature=0.0),
        budget=Budget(max_seconds=1.5),
    )
    result, _ = await stack.run(job)
    assert result.stop_reason == "budget_time"
    assert result.metadata["budget"]["budget"] == "time"
    assert result.text.strip() and result.usage.completion_tokens > 0
    assert result.elapsed_s < 5.0, "the job ends soon after its time budget"
