"""The mixed vote against a scripted worker: CoT samples and program samples run at once, and
an answer both kinds reach beats a larger vote of one kind alone."""

from __future__ import annotations

import json

import pytest

from scaffolding_nats.methods import MajorityVoteController, MixedVoteController, ProgramVoteController, load_registry
from scaffolding_nats.methods.kit.base import ParamError
from scaffolding_nats.methods.mixed_vote import COT_INSTRUCTION, chatml, mixed_choice
from scaffolding_nats.proto import ChatMessage, ChatTask, GenerationTask, ToolCallTask
from scaffolding_nats.services.controller.prompting import _chatml

from .scripted import ScriptedWorker, run, seed_of

COT = {0: "Answer: 7", 1: "Answer: 7", 2: "Answer: 18", 3: "Answer: 9"}
PROGRAMS = {0: "print(18)", 1: "print(18)", 2: "print(5)"}


def cot(task: GenerationTask) -> str:
    return f"steps... {COT[seed_of(task) % 4]}"


def program(task: ChatTask) -> str:
    return f"```python\n{PROGRAMS[(task.seed or 0) % 3]}\n```"


def interpreter(task: ToolCallTask) -> str:
    return json.loads(task.arguments)["code"].removeprefix("print(").removesuffix(")") + "\n"


def mixed(**kw: object) -> MixedVoteController:
    return MixedVoteController(
        MajorityVoteController(sample_num=4, base_seed=0, extractor="number"),
        ProgramVoteController(sample_num=3, base_seed=0),
        **kw,  # type: ignore[arg-type]
    )


def test_rule() -> None:
    assert mixed_choice(["7", "7", "18", "9"], ["18", "18", "5"]) == ("18", True)
    assert mixed_choice(["7", "7", "18"], ["18"], rule="pooled") == ("7", False)
    assert mixed_choice(["7", "7"], ["5"]) == ("7", False)  # nothing shared: the pooled vote
    assert mixed_choice([None], [None]) == (None, False)


async def test_an_answer_both_kinds_reach_wins() -> None:
    worker = ScriptedWorker(cot, chat=program, tool=interpreter)
    out = await run(mixed(), worker, [ChatMessage(role="user", content="How many eggs?")])
    gens, chats = worker.of(GenerationTask), worker.of(ChatTask)
    assert len(gens) == 4 and len(chats) == 3 and len(worker.of(ToolCallTask)) == 3
    assert gens[0].input_str == chatml([ChatMessage(role="user", content=f"How many eggs?\n\n{COT_INSTRUCTION}")])
    assert chats[0].messages[-1].content.startswith("How many eggs?\n\n")
    meta = out.output.metadata
    assert out.output.answer == "18" and meta["agreement"] is True
    assert meta["cot_answers"] == ["7", "7", "18", "9"] and meta["program_answers"] == ["18", "18", "5"]
    assert meta["answers"] == meta["cot_answers"] + meta["program_answers"]
    assert meta["votes"] == {"7": 2.0, "18": 3.0, "9": 1.0, "5": 1.0}
    assert out.output.text == "steps... Answer: 18"  # the CoT sample that reached it
    pooled = await run(mixed(rule="pooled", program_weight=0.5), ScriptedWorker(cot, chat=program, tool=interpreter))
    assert pooled.output.answer == "7"  # 2 CoT votes beat 1 + 2 x 0.5


async def test_one_kind_failing_leaves_the_other() -> None:
    worker = ScriptedWorker(lambda t: RuntimeError("down"), chat=program, tool=interpreter)
    out = await run(mixed(), worker, "How many eggs?")
    assert out.output.answer == "18" and out.output.metadata["cot_answers"] == []
    assert out.output.text.endswith("Answer: 18")


def test_chatml_matches_the_controller_template() -> None:
    msgs = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")]
    assert chatml(msgs) == _chatml(msgs)


def test_served() -> None:
    ctl = load_registry().build("mixed_vote", {"cot": {"params": {"sample_num": 3}}})
    assert isinstance(ctl, MixedVoteController) and ctl.accepts_messages
    assert ctl.cot_controller.sample_num == 3 and ctl.program_controller.sample_num == 5  # type: ignore[attr-defined]
    with pytest.raises(ParamError):
        MixedVoteController(None, None)
