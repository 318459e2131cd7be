from __future__ import annotations

from typing import Any

from scaffolding_nats.methods import OutcomeRewardController, ProcessRewardController, split_steps
from scaffolding_nats.proto import GenerationTask, RewardTask, Task
from scaffolding_nats.runtime import Controller, ControllerGen, Output, ParallelProcess

from .scripted import ScriptedWorker, run


def test_split_steps() -> None:
    text = "Step 1: add\nthe numbers\nStep 2: carry\n\nSo the result\n\n\nis 5"
    assert split_steps(text) == ["Step 1: add\nthe numbers", "Step 2: carry", "So the result", "is 5"]
    assert split_steps("") == []
    assert split_steps("one para") == ["one para"]


class _Score(Controller):
    def __init__(self, reward: Controller) -> None:
        super().__init__()
        self.reward = reward

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        tasks: list[Task] = [
            GenerationTask(input_str=prompt, output_str=t) for t in ("a\n\nb", "c", "d\n\ne\n\nf")
        ]
        yield ParallelProcess([self.reward], [tasks], [{"prompt": "PROMPT"}])
        scores = getattr(self.reward, "scores", None)
        return Output(text=repr(scores), metadata={"meta": [t.metadata.get("reward") for t in tasks]})


async def test_outcome_reward_is_one_batched_task() -> None:
    worker = ScriptedWorker(reward=lambda t: [float(len(c)) for c in t.candidates])
    out = await run(_Score(OutcomeRewardController()), worker, "p")
    (task,) = worker.of(RewardTask)
    assert (task.mode, task.prompt, task.candidates, task.worker_tag) == (
        "outcome",
        "PROMPT",
        ["a\n\nb", "c", "d\n\ne\n\nf"],
        "reward",
    )
    assert out.output.text == "[4.0, 1.0, 7.0]"
    assert out.output.metadata["meta"] == [4.0, 1.0, 7.0]
    assert "reward" in out.usage_by_controller


async def test_process_reward_splits_steps_and_aggregates() -> None:
    worker = ScriptedWorker(reward=lambda t: [[0.1 * (i + 1) for i in range(len(s))] for s in t.steps or []])
    out = await run(_Score(ProcessRewardController(aggregate="min")), worker, "p")
    (task,) = worker.of(RewardTask)
    assert task.mode == "process"
    assert task.steps == [["a", "b"], ["c"], ["d", "e", "f"]]
    assert out.output.text == "[0.1, 0.1, 0.1]"
    out = await run(_Score(ProcessRewardController(aggregate="last")), worker, "p")
    assert out.output.text == "[0.2, 0.1, 0.30000000000000004]"


async def test_reward_failure_gives_none_scores() -> None:
    worker = ScriptedWorker(reward=lambda t: RuntimeError("judge down"))
    out = await run(_Score(OutcomeRewardController()), worker, "p")
    assert out.output.text == "None"
    worker = ScriptedWorker(reward=lambda t: [1.0])  # wrong length: not trusted
    out = await run(_Score(OutcomeRewardController()), worker, "p")
    assert out.output.text == "None"
