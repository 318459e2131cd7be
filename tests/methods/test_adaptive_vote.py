"""The adaptive vote against a scripted worker: it stops after the first waves once the vote
is decided, draws a prefix of vote@N's own seeded samples, and runs to N when it is not."""

from __future__ import annotations

import pytest

from scaffolding_nats.methods import AdaptiveVoteController, MajorityVoteController, load_registry
from scaffolding_nats.methods.adaptive_vote import beta_confidence
from scaffolding_nats.methods.kit.base import ParamError
from scaffolding_nats.proto import Budget, GenerationTask

from .scripted import ScriptedWorker, run, seed_of


def test_beta_rule_is_a_binomial_tail() -> None:
    assert beta_confidence(3, 0) == pytest.approx(15 / 16)
    assert beta_confidence(4, 0) == pytest.approx(31 / 32)
    assert beta_confidence(3, 1) == pytest.approx(26 / 32)
    assert beta_confidence(0, 0) == pytest.approx(0.5)


async def test_agreeing_samples_stop_after_two_waves() -> None:
    worker = ScriptedWorker(lambda t: f"so {seed_of(t)} steps. Answer: 42")
    ctl = AdaptiveVoteController(sample_num=8, wave_size=2, base_seed=0)
    out = await run(ctl, worker, "Q")
    assert out.output.answer == "42"
    assert len(worker.of(GenerationTask)) == 4  # 4 of 4 agreeing: P = 31/32 >= 0.95
    meta = out.output.metadata
    assert (meta["num_samples"], meta["waves"], meta["stop"], meta["samples_saved"]) == (4, 2, "beta", 4)
    assert out.num_tasks == 4


async def test_split_samples_run_to_the_end_or_until_unbeatable() -> None:
    answers = {0: "1", 1: "2", 2: "3", 3: "1", 4: "2", 5: "1", 6: "1", 7: "1"}
    worker = ScriptedWorker(lambda t: f"Answer: {answers[seed_of(t)]}")
    out = await run(AdaptiveVoteController(sample_num=8, wave_size=2, base_seed=0), worker, "Q")
    # After 8 samples: 1 x5, 2 x2, 3 x1. After 6 (1 x3, 2 x2) the lead of 1 could still be lost.
    assert out.output.answer == "1"
    assert out.output.metadata["num_samples"] == 8
    worker2 = ScriptedWorker(lambda t: f"Answer: {answers[seed_of(t)]}")
    ctl = AdaptiveVoteController(sample_num=8, wave_size=2, base_seed=0, stop_rule="unbeatable")
    out2 = await run(ctl, worker2, "Q")
    assert out2.output.metadata["stop"] in ("unbeatable", "all_samples")


async def test_samples_are_a_prefix_of_vote_at_n() -> None:
    full, adaptive = ScriptedWorker(lambda t: "Answer: 5"), ScriptedWorker(lambda t: "Answer: 5")
    await run(MajorityVoteController(sample_num=8, base_seed=123), full, "Q")
    await run(AdaptiveVoteController(sample_num=8, base_seed=123), adaptive, "Q")
    drawn = [t.seed for t in adaptive.of(GenerationTask)]
    assert drawn == [t.seed for t in full.of(GenerationTask)][: len(drawn)] and len(drawn) == 4


async def test_abstaining_samples_do_not_decide() -> None:
    worker = ScriptedWorker(lambda t: "no answer here" if seed_of(t) < 6 else "Answer: 9")
    out = await run(AdaptiveVoteController(sample_num=8, base_seed=0, extractor="answer_line"), worker, "Q")
    assert out.output.answer == "9" and out.output.metadata["num_samples"] == 8


async def test_a_budget_ends_it_with_the_vote_so_far() -> None:
    worker = ScriptedWorker(lambda t: "Answer: 3")
    out = await run(AdaptiveVoteController(sample_num=8, base_seed=0), worker, "Q", budget=Budget(max_tasks=3))
    assert out.output.answer == "3" and out.stop_reason == "budget_tasks"


def test_served_and_checked() -> None:
    reg = load_registry()
    ctl = reg.build("adaptive_vote", {"sample_num": 6})
    assert isinstance(ctl, AdaptiveVoteController) and ctl.sample_num == 6 and ctl.wave_size == 2
    with pytest.raises(ParamError):
        AdaptiveVoteController(confidence=1.0)
