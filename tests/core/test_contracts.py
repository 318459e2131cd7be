"""What the runtime relies on is declared (members, protocols), not probed with getattr."""

from __future__ import annotations

import re
from pathlib import Path

from scaffolding_nats.methods import NativeGenerationController, OutcomeRewardController, ProcessRewardController
from scaffolding_nats.methods.native import NativeChatController
from scaffolding_nats.methods.reward import RewardScorer, scores_of
from scaffolding_nats.runtime import Controller, TaskRunner
from scaffolding_nats.workers.synthetic import SyntheticWorker

SRC = Path(__file__).resolve().parents[2] / "src" / "scaffolding_nats"


def test_controller_members_are_declared() -> None:
    assert Controller().best_so_far() is None
    assert Controller.accepts_messages is False and NativeChatController.accepts_messages is True


def test_reward_scores_come_through_a_protocol() -> None:
    outcome, process = OutcomeRewardController(), ProcessRewardController()
    assert isinstance(outcome, RewardScorer) and isinstance(process, RewardScorer)
    assert outcome.step_splitter is None and process.step_splitter is not None
    assert scores_of(outcome) is None
    outcome.scores = [0.5]
    assert scores_of(outcome) == [0.5]
    assert scores_of(NativeGenerationController()) is None  # not a scorer: no scores, no guessing


def test_task_runner_has_a_declared_fallback_not_a_fake_mapping() -> None:
    local, bus = SyntheticWorker(), SyntheticWorker()
    runner = TaskRunner({"generation": local}, fallback=bus)
    assert runner.worker_for("generation") is local and runner.worker_for("anything") is bus
    assert TaskRunner({"generation": local}).worker_for("reward") is None


def test_no_hidden_getattr_contracts_remain() -> None:
    hidden = re.compile(r"getattr\([^)]*\"(accepts_messages|best_so_far|scores|step_splitter)\"")
    offenders = [str(p) for p in SRC.rglob("*.py") if hidden.search(p.read_text())]
    assert not offenders
    assert "class AnyTag" not in (SRC / "services/controller/service.py").read_text()
