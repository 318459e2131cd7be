from __future__ import annotations

import pytest

from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import BestOfNController, ProcessRewardController
from scaffolding_nats.proto import Budget, GenerationTask, RewardTask

from .scripted import ScriptedWorker, run, seed_of


def sample(task: GenerationTask) -> str:
    return f"Step 1: think {seed_of(task)}\n\nStep 2: \\boxed{{{seed_of(task) * 10}}}"


def score_by_seed_digit(task: RewardTask) -> list[float]:
    return [{"2": 0.9, "1": 0.5}.get(c.split("think ")[1][0], 0.1) for c in task.candidates]


async def test_best_sample_lands_in_result() -> None:
    worker = ScriptedWorker(sample, reward=score_by_seed_digit)
    out = await run(BestOfNController(sample_num=4, base_seed=0), worker, "Q")
    assert sorted(seed_of(t) for t in worker.of(GenerationTask)) == [0, 1, 2, 3]
    (reward,) = worker.of(RewardTask)  # one batched scoring call
    assert reward.mode == "outcome" and len(reward.candidates) == 4 and reward.prompt == "Q"
    assert out.output.text == sample(GenerationTask(seed=2))
    assert out.output.answer == "20"
    assert out.output.metadata["score"] == 0.9
    assert out.output.metadata["index"] == 2
    assert set(out.usage_by_controller) == {"generation", "reward"}


async def test_samplers_are_clones_not_one_shared_instance() -> None:
    ctl = BestOfNController(sample_num=3)
    worker = ScriptedWorker(sample, reward=score_by_seed_digit)
    clone = ctl.clone()
    assert isinstance(clone, BestOfNController)
    await run(clone, worker, "Q", clone=False)
    assert clone._branches and len({id(b.inner) for b in clone._branches}) == 3  # type: ignore[attr-defined]
    assert all(b.inner is not clone.sample_controller for b in clone._branches)  # type: ignore[attr-defined]


async def test_failed_samples_are_not_scored() -> None:
    def script(task: GenerationTask) -> str | Exception:
        return RuntimeError("x") if seed_of(task) == 2 else sample(task)

    worker = ScriptedWorker(script, reward=score_by_seed_digit)
    out = await run(BestOfNController(sample_num=4, base_seed=0), worker, "Q")
    (reward,) = worker.of(RewardTask)
    assert len(reward.candidates) == 3
    assert out.output.answer == "10"


async def test_reward_failure_falls_back() -> None:
    worker = ScriptedWorker(sample, reward=lambda t: RuntimeError("judge down"))
    out = await run(BestOfNController(sample_num=2, base_seed=0), worker, "Q")
    assert out.output.metadata["fallback"] == "reward_failed"
    assert out.output.answer == "0"


async def test_all_failed_raise() -> None:
    worker = ScriptedWorker(lambda t: RuntimeError("down"), reward=score_by_seed_digit)
    with pytest.raises(TaskFailed, match="all 2 samples failed"):
        await run(BestOfNController(sample_num=2), worker, "Q")
    assert not worker.of(RewardTask)


async def test_process_reward_variant() -> None:
    def prm(task: RewardTask) -> list[list[float]]:
        return [[0.9, 0.2 if "think 1" in c else 0.8] for c in task.candidates]

    worker = ScriptedWorker(sample, reward=prm)
    out = await run(
        BestOfNController(reward_controller=ProcessRewardController(), sample_num=2, base_seed=0), worker, "Q"
    )
    (reward,) = worker.of(RewardTask)
    assert reward.steps == [
        ["Step 1: think 0", "Step 2: \\boxed{0}"],
        ["Step 1: think 1", "Step 2: \\boxed{10}"],
    ]
    assert out.output.answer == "0"


async def test_budget_before_scoring_returns_unscored_sample() -> None:
    worker = ScriptedWorker(sample, reward=score_by_seed_digit)
    out = await run(BestOfNController(sample_num=3, base_seed=0), worker, "Q", budget=Budget(max_tasks=3))
    assert out.stop_reason == "budget_tasks"
    assert out.output.metadata["fallback"] == "unscored"
    assert out.output.answer == "0"


async def test_scoring_waits_a_bounded_time_for_a_reward_worker() -> None:
    """Best-of-N can do without scores, so its reward task does not wait out the whole task
    deadline for a reward worker that may not run (``reward_wait``; the transport enforces it)."""
    worker = ScriptedWorker(sample, reward=score_by_seed_digit)
    await run(BestOfNController(sample_num=2), worker, "Q")
    assert [t.start_timeout for t in worker.of(RewardTask)] == [30.0]
    worker = ScriptedWorker(sample, reward=score_by_seed_digit)
    await run(BestOfNController(sample_num=2, reward_wait=None), worker, "Q")
    assert [t.start_timeout for t in worker.of(RewardTask)] == [None]
    assert "start_timeout" not in worker.of(RewardTask)[0].inputs()  # never on the wire
