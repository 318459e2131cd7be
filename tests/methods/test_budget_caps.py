"""Budgets are hard caps for every method: tasks and tokens are reserved before dispatch, so
branches launched together cannot overrun them; the job stops with its best answer so far."""

from __future__ import annotations

import json

import pytest

from scaffolding_nats.errors import BudgetExhausted
from scaffolding_nats.methods import load_registry
from scaffolding_nats.proto import Budget, ChatMessage, ChatTask, GenerationTask, RewardTask, ToolCall

from .scripted import ScriptedWorker, run

REGISTRY = load_registry()
METHODS = REGISTRY.names()
CHAT_METHODS = {"chat", "tool_agent"}

STEPS = "Step one adds.\n\nStep two checks.\n\nSo the answer is \\boxed{4}"


def _reward(task: RewardTask) -> list[float] | list[list[float]]:
    if task.mode == "process":
        return [[0.5] * len(steps) for steps in task.steps or []]
    return [0.5 for _ in task.candidates]


def _chat(task: ChatTask) -> ChatMessage:
    if not any(m.role == "tool" for m in task.messages):
        call = ToolCall(id="c1", name="calculator", arguments=json.dumps({"expression": "2+2"}))
        return ChatMessage(role="assistant", content="", tool_calls=[call])
    return ChatMessage(role="assistant", content="the answer is four words long here")


def _worker() -> ScriptedWorker:
    return ScriptedWorker(lambda t: STEPS, reward=_reward, chat=_chat, tool=lambda t: "4")


def _prompt(method: str) -> object:
    return [ChatMessage(role="user", content="2+2?")] if method in CHAT_METHODS else "Q: 2+2? "


def _dispatched(worker: ScriptedWorker) -> int:
    return len(worker.seen)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_tasks", [1, 2, 3])
async def test_task_budget_is_a_hard_cap(method: str, max_tasks: int) -> None:
    worker = _worker()
    ctl = REGISTRY.build(method)
    try:
        out = await run(ctl, worker, _prompt(method), budget=Budget(max_tasks=max_tasks))
    except BudgetExhausted as exc:
        assert exc.details["budget"] == "tasks"
        assert exc.details["used"] <= max_tasks
    else:
        assert out.num_tasks <= max_tasks
        if out.stop_reason != "completed":
            assert out.stop_reason == "budget_tasks"
    assert _dispatched(worker) <= max_tasks, f"{method} dispatched {_dispatched(worker)} tasks"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_tokens", [1, 4, 17])
async def test_token_budget_is_a_hard_cap(method: str, max_tokens: int) -> None:
    worker = _worker()
    ctl = REGISTRY.build(method)
    try:
        out = await run(ctl, worker, _prompt(method), budget=Budget(max_tokens=max_tokens))
    except BudgetExhausted as exc:
        assert exc.details["budget"] == "tokens"
        assert exc.details["used"] <= max_tokens
    else:
        assert out.usage.completion_tokens <= max_tokens
        if out.stop_reason != "completed":
            assert out.stop_reason == "budget_tokens"
    sampled = [t for t in worker.seen if isinstance(t, GenerationTask | ChatTask)]
    assert all(t.max_tokens is not None and t.max_tokens <= max_tokens for t in sampled), "capped by what was left"


@pytest.mark.parametrize("method", METHODS)
async def test_time_budget_is_a_hard_cap(method: str) -> None:
    worker = _worker()
    worker.delay = 0.02
    ctl = REGISTRY.build(method)
    try:
        out = await run(ctl, worker, _prompt(method), budget=Budget(max_seconds=0.05))
    except BudgetExhausted as exc:
        assert exc.details["budget"] == "time"
    else:
        assert out.stop_reason in ("completed", "budget_time")
        assert out.elapsed_s < 0.05 + 0.5


async def test_parallel_vote_reserves_before_dispatch() -> None:
    """The observation of issue 8: 4 samples under ``max_tasks: 1`` ran 4 tasks."""
    worker = _worker()
    ctl = REGISTRY.build("majority_vote", {"sample_num": 4})
    try:
        out = await run(ctl, worker, "Q", budget=Budget(max_tasks=1))
    except BudgetExhausted:
        pass
    else:
        assert out.stop_reason == "budget_tasks" and out.num_tasks == 1
    assert _dispatched(worker) == 1
    worker = _worker()
    ctl = REGISTRY.build("majority_vote", {"sample_num": 8})
    out = await run(ctl, worker, "Q", budget=Budget(max_tokens=32))
    assert out.usage.completion_tokens <= 32
    assert all(t.max_tokens == 4 for t in worker.seen)


LONG = "the answer is \\boxed{4} and then some more words"


async def test_a_vote_wider_than_its_task_budget_keeps_the_samples_it_was_allowed() -> None:
    """8 samples under ``max_tasks: 5``: the 5 dispatched finish and vote (the refused sixth
    used to cancel them and fail the job with ``budget_exhausted``)."""
    worker = ScriptedWorker(lambda t: LONG, delay=0.05)
    out = await run(REGISTRY.build("majority_vote", {"sample_num": 8}), worker, "Q", budget=Budget(max_tasks=5))
    assert out.stop_reason == "budget_tasks" and out.num_tasks == 5 and _dispatched(worker) == 5
    assert out.output.answer == "4" and out.output.metadata["votes"] == {"4": 5}
    assert out.output.metadata["budget"]["used"] == 5


async def test_a_token_budget_below_the_fan_out_counts_what_it_spent() -> None:
    """``max_tokens: 4`` over 8 samples: 4 samples get a token each and finish; the job reports
    the 4 tokens it spent (it used to cancel them and report ``used: 0``)."""
    worker = ScriptedWorker(lambda t: LONG, delay=0.05)
    out = await run(REGISTRY.build("majority_vote", {"sample_num": 8}), worker, "Q", budget=Budget(max_tokens=4))
    assert out.stop_reason == "budget_tokens"
    assert out.usage.completion_tokens == 4 and out.output.metadata["budget"]["used"] == 4
    assert sorted(t.max_tokens for t in worker.seen) == [1, 1, 1, 1]


async def test_samples_cut_short_by_the_token_budget_say_so() -> None:
    """Every sample stopped at the 2 tokens its share of the budget allowed: not ``completed``."""
    worker = ScriptedWorker(lambda t: LONG)
    out = await run(REGISTRY.build("majority_vote", {"sample_num": 8}), worker, "Q", budget=Budget(max_tokens=16))
    assert out.stop_reason == "budget_tokens"
    assert out.output.metadata["budget"] == {"budget": "tokens", "limit": 16, "used": 16, "cut_short": 8}
    # Cut short by their own limit instead, under a budget that did not bind: completed.
    sampler = {"method": "native", "params": {"max_tokens": 2}}
    ctl = REGISTRY.build("majority_vote", {"sample_num": 8, "sampler": sampler})
    out = await run(ctl, ScriptedWorker(lambda t: LONG), "Q", budget=Budget(max_tokens=100))
    assert out.stop_reason == "completed" and out.usage.completion_tokens == 16
