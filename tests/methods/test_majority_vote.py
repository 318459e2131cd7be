from __future__ import annotations

import pytest

from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import DynasorCoTController, MajorityVoteController, NativeGenerationController
from scaffolding_nats.methods.base import branch_seed
from scaffolding_nats.proto import Budget, GenerationTask

from .scripted import ScriptedWorker, run, seed_of

ANSWERS = {0: "\\boxed{1,000}", 1: "\\boxed{7}", 2: "\\boxed{1000.0}", 3: "Answer: 1e3", 4: "\\boxed{7}"}


def by_seed(task: GenerationTask) -> str:
    return f"work for seed {seed_of(task)}. " + ANSWERS.get(seed_of(task), "no idea")


async def test_vote_picks_majority_with_exact_tasks() -> None:
    worker = ScriptedWorker(by_seed)
    ctl = MajorityVoteController(NativeGenerationController(temperature=0.8), sample_num=5, base_seed=0)
    out = await run(ctl, worker, "Q")
    sent = worker.of(GenerationTask)
    assert sorted(seed_of(t) for t in sent) == [0, 1, 2, 3, 4]
    assert all(t.input_str == "Q" and t.temperature == 0.8 for t in sent)
    assert out.output.answer == "1,000"
    assert out.output.text == "work for seed 0. \\boxed{1,000}"
    assert out.output.metadata["votes"] == {"1000": 3, "7": 2}
    assert out.output.metadata["num_answered"] == 5
    assert out.num_tasks == 5
    assert set(out.usage_by_controller) == {"generation"}


async def test_failed_samples_are_ignored() -> None:
    def script(task: GenerationTask) -> str | Exception:
        return RuntimeError("boom") if seed_of(task) in (0, 2) else by_seed(task)

    out = await run(MajorityVoteController(sample_num=5, base_seed=0), ScriptedWorker(script), "Q")
    assert out.output.answer == "7"
    assert out.output.metadata["num_succeeded"] == 3
    assert out.output.metadata["votes"] == {"7": 2, "1000": 1}


async def test_no_answer_falls_back_to_first_success() -> None:
    def script(task: GenerationTask) -> str | Exception:
        return RuntimeError("x") if seed_of(task) == 0 else f"words only {'abc'[seed_of(task) % 3]}"

    ctl = MajorityVoteController(sample_num=3, base_seed=0, extractor="boxed")
    out = await run(ctl, ScriptedWorker(script), "Q")
    assert out.output.answer is None
    assert out.output.text == "words only b"
    assert out.output.metadata["fallback"] == "no_answer"


async def test_all_samples_failed_raise_typed_error() -> None:
    worker = ScriptedWorker(lambda t: RuntimeError("backend down"))
    with pytest.raises(TaskFailed, match=r"all 3 samples failed.*backend down"):
        await run(MajorityVoteController(sample_num=3), worker, "Q")


async def test_budget_hit_votes_over_finished_samples() -> None:
    class Slow(ScriptedWorker):
        pass

    worker = ScriptedWorker(by_seed)
    # Two-stage sampler: the vote runs 4 samples of a 2-step controller; the task budget
    # allows the first stage of each and stops the second.
    ctl = MajorityVoteController(
        DynasorCoTController(chunk_size=2, certainty_threshold=5), sample_num=4, base_seed=0
    )
    out = await run(ctl, worker, "Q", budget=Budget(max_tasks=6))
    assert out.stop_reason == "budget_tasks"
    assert out.output.metadata["budget"]["budget"] == "tasks"
    assert out.output.text  # partial texts were voted over, not lost
    assert worker.closed  # streams left open were cancelled at the backend


async def test_clone_gives_independent_state() -> None:
    ctl = MajorityVoteController(sample_num=2)
    twin = ctl.clone()
    assert isinstance(twin, MajorityVoteController)
    assert twin.sample_controller is not ctl.sample_controller
    await run(ctl, ScriptedWorker(by_seed), "Q")
    assert twin._output is None


async def test_vote_over_any_sampler_nests() -> None:
    inner = MajorityVoteController(sample_num=3, base_seed=0)
    outer = MajorityVoteController(inner, sample_num=2, base_seed=10)
    seeds = [branch_seed(GenerationTask(seed=s), i, None) for s in (10, 11) for i in range(3)]
    worker = ScriptedWorker(lambda t: f"\\boxed{{{seeds.index(seed_of(t)) % 2}}}")
    out = await run(outer, worker, "Q")
    assert sorted(seed_of(t) for t in worker.of(GenerationTask)) == sorted(s for s in seeds if s is not None)
    assert len(set(seeds)) == 6
    assert out.output.answer == "0"  # 2 of 3 in the first inner vote, then the tie goes first


async def test_time_budget_with_nothing_finished_is_typed() -> None:
    from scaffolding_nats.errors import BudgetExhausted

    worker = ScriptedWorker(by_seed, delay=0.5)
    with pytest.raises(BudgetExhausted) as err:
        await run(MajorityVoteController(sample_num=3), worker, "Q", budget=Budget(max_seconds=0.05))
    assert err.value.details["budget"] == "time"
