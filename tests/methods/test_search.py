"""Beam search, MCTS and tree of thoughts against a scripted step model: a step is "A" (good)
or "B" (bad) by seed parity; the third step gives the answer (the number of A steps)."""

from __future__ import annotations

import pytest

from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import BeamSearchController, MCTSController, TreeOfThoughtsController
from scaffolding_nats.proto import Budget, GenerationTask, RewardTask

from .scripted import ScriptedWorker, run, seed_of

PROMPT = "Q: what?\n\n"
STEP_SCORE = {"A": 0.9, "B": 0.3}


def chain_of(task: GenerationTask) -> list[str]:
    rest = (task.input_str or "").removeprefix(PROMPT)
    return [s for s in rest.split("\n\n") if s]


def step_model(task: GenerationTask) -> str:
    if "Which candidate" in (task.input_str or ""):
        return "The best choice is 2"
    chain = chain_of(task)
    if len(chain) >= 2:
        return f"\\boxed{{{chain.count('A')}}}"
    return "A" if seed_of(task) % 2 == 0 else "B"


def step_score(step: str) -> float:
    return STEP_SCORE.get(step, 0.8)


def prm(task: RewardTask) -> list[list[float]]:
    return [[step_score(s) for s in steps] for steps in task.steps or []]


def orm(task: RewardTask) -> list[float]:
    return [step_score(c.split("\n\n")[-1]) for c in task.candidates]


async def test_beam_search_keeps_best_beams_and_scores_steps() -> None:
    worker = ScriptedWorker(step_model, reward=prm)
    ctl = BeamSearchController(beam_width=2, expansions_per_beam=2, max_steps=4, base_seed=0)
    out = await run(ctl, worker, PROMPT)
    gens = worker.of(GenerationTask)
    assert [sorted(seed_of(t) for t in gens[i:j]) for i, j in ((0, 2), (2, 6), (6, 10))] == [
        [0, 1],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]
    assert len(gens) == 10
    assert all(t.stop == ["\n\n"] and t.max_tokens == 256 for t in gens)
    assert {t.input_str for t in gens[6:]} == {PROMPT + "A\n\nA\n\n", PROMPT + "A\n\nB\n\n"}
    rewards = worker.of(RewardTask)
    assert [r.mode for r in rewards] == ["process"] * 3
    assert rewards[0].steps == [["A"], ["B"]]
    assert out.output.text == "A\n\nA\n\n\\boxed{2}"
    assert out.output.answer == "2"
    assert out.output.metadata["finished"] is True
    assert set(out.usage_by_controller) == {"generation", "reward"}


async def test_beam_search_all_failed_and_budget() -> None:
    with pytest.raises(TaskFailed, match="beam search produced no step"):
        await run(BeamSearchController(), ScriptedWorker(lambda t: RuntimeError("x"), reward=prm), PROMPT)
    worker = ScriptedWorker(step_model, reward=prm)
    ctl = BeamSearchController(beam_width=2, expansions_per_beam=2, max_steps=4, base_seed=0)
    out = await run(ctl, worker, PROMPT, budget=Budget(max_tasks=7))  # 2 gens, 1 reward, 4 gens
    assert out.stop_reason == "budget_tasks"
    assert out.output.text == "A" and out.output.metadata["partial"] is True


async def test_mcts_ucb_expansion_backprop_and_completion() -> None:
    worker = ScriptedWorker(step_model, reward=orm)
    ctl = MCTSController(max_depth=2, max_iterations=3, num_thoughts_per_step=2, base_seed=0)
    out = await run(ctl, worker, PROMPT)
    gens = worker.of(GenerationTask)
    # iteration 1 expands the root, 2 the best child (A), 3 the under-explored one (B) by UCB.
    assert [t.input_str for t in gens[:6:2]] == [PROMPT, PROMPT + "A\n\n", PROMPT + "B\n\n"]
    assert [sorted(seed_of(t) for t in gens[i : i + 2]) for i in (0, 2, 4)] == [[0, 1], [2, 3], [4, 5]]
    final = gens[6]
    assert (final.input_str, final.stop, seed_of(final)) == (PROMPT + "A\n\nA\n\n", None, 10_000)
    assert len(gens) == 7 and len(worker.of(RewardTask)) == 3
    assert all(r.mode == "outcome" for r in worker.of(RewardTask))
    assert out.output.text == "A\n\nA\n\n\\boxed{2}"
    assert out.output.answer == "2"
    assert out.output.metadata["iterations"] == 3 and out.output.metadata["nodes"] == 7
    assert out.output.metadata["value"] == pytest.approx(0.9)


def test_mcts_ucb_formula() -> None:
    from scaffolding_nats.methods.mcts import Node

    root = Node(visits=4)
    child = Node(["A"], root, visits=3, value=2.1)
    assert child.ucb(1.414) == pytest.approx(0.7 + 1.414 * (1.3862943611 / 3) ** 0.5)
    assert Node(["B"], root).ucb(1.414) == float("inf")


@pytest.mark.parametrize(("strategy", "answer", "rewards"), [("best", "2", 3), ("vote", "0", 0)])
async def test_tot_levelwise_selection(strategy: str, answer: str, rewards: int) -> None:
    worker = ScriptedWorker(step_model, reward=orm)
    ctl = TreeOfThoughtsController(
        max_depth=3,
        num_thoughts_per_step=2,
        branch_factor=1,
        selection_strategy=strategy,
        vote_samples=3,
        base_seed=0,
    )
    out = await run(ctl, worker, PROMPT)
    assert out.output.answer == answer
    assert len(worker.of(RewardTask)) == rewards
    ballots = [t for t in worker.of(GenerationTask) if "Which candidate" in (t.input_str or "")]
    assert len(ballots) == (9 if strategy == "vote" else 0)
    assert out.output.metadata["finished"] is True


async def test_tot_random_is_seeded_and_needs_no_reward() -> None:
    worker = ScriptedWorker(step_model)
    ctl = TreeOfThoughtsController(
        max_depth=3,
        num_thoughts_per_step=2,
        branch_factor=2,
        selection_strategy="random",
        seed=7,
        base_seed=0,
    )
    first = await run(ctl, worker, PROMPT)
    again = await run(ctl, ScriptedWorker(step_model), PROMPT)
    assert first.output.text == again.output.text
    assert first.output.answer is not None
    assert not worker.of(RewardTask)
