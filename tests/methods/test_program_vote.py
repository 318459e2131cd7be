"""Program-aided voting against scripted workers: programs are extracted from the replies,
sent to the ``python`` tool as ``{"code": ...}``, and what they print is voted."""

from __future__ import annotations

import json
import warnings

import pytest

from scaffolding_nats.client import JobClient
from scaffolding_nats.errors import TaskFailed
from scaffolding_nats.methods import ProgramVoteController, load_registry
from scaffolding_nats.methods.program_vote import PROGRAM_INSTRUCTION, extract_program
from scaffolding_nats.proto import ChatMessage, ChatTask, Job, Subjects, ToolCallTask
from scaffolding_nats.services.controller import ControllerService
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers.tools.sandbox import SandboxUnavailable
from scaffolding_nats.workers.tools_worker import ToolsWorker

from .scripted import ScriptedWorker, run

PROGRAMS = {
    0: "Here is the program:\n```python\neggs = 16 - 3 - 4\nprint(eggs * 2)\n```",
    1: "```python\ndef solution():\n    return (16 - 3 - 4) * 2\n```",
    2: "```python\nprint(16 * 2)\n```",
    3: "I think the answer is 18.",  # no program: abstains
    4: "```python\nprint(1/0)\n```",  # fails in the tool: abstains
}


def reply(task: ChatTask) -> str:
    return PROGRAMS[(task.seed or 0) % 5]


def interpreter(task: ToolCallTask) -> str:
    """What a Python sandbox would print for the scripted programs."""
    code = json.loads(task.arguments)["code"]
    if "1/0" in code:
        raise RuntimeError("ZeroDivisionError: division by zero")
    return {"print(eggs * 2)": "18\n", "print(solution())": "18\n", "print(16 * 2)": "32\n"}[code.splitlines()[-1]]


async def test_programs_run_in_the_tool_and_their_outputs_are_voted() -> None:
    worker = ScriptedWorker(chat=reply, tool=interpreter)
    out = await run(ProgramVoteController(sample_num=5, base_seed=0), worker, "Janet's ducks lay 16 eggs...")
    chats, calls = worker.of(ChatTask), worker.of(ToolCallTask)
    assert len(chats) == 5 and len({c.seed for c in chats}) == 5
    assert chats[0].messages[-1].content == f"Janet's ducks lay 16 eggs...\n\n{PROGRAM_INSTRUCTION}"
    assert {c.tool_name for c in calls} == {"python"} and len(calls) == 4
    assert all(set(json.loads(c.arguments)) == {"code"} for c in calls)
    assert out.output.answer == "18"
    assert out.output.metadata["votes"] == {"18": 2, "32": 1}
    assert out.output.metadata["num_answered"] == 3
    assert out.output.result.index == 0
    assert "print(eggs * 2)" in out.output.text and out.output.text.endswith("Answer: 18")


async def test_tool_name_and_tag_are_configurable() -> None:
    worker = ScriptedWorker(chat=reply, tool=interpreter)
    ctl = ProgramVoteController(sample_num=3, base_seed=0, tool_name="py_sandbox", tool_tag="sandbox")
    await run(ctl, worker, "Q", tags=("generation", "sandbox"))
    calls = worker.of(ToolCallTask)
    assert calls and all(c.tool_name == "py_sandbox" and c.worker_tag == "sandbox" for c in calls)


async def test_chat_messages_keep_the_conversation() -> None:
    worker = ScriptedWorker(chat=reply, tool=interpreter)
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Q?")]
    await run(ProgramVoteController(sample_num=1, base_seed=0), worker, messages)
    sent = worker.of(ChatTask)[0].messages
    assert [m.role for m in sent] == ["system", "user"] and sent[1].content.startswith("Q?\n\n")


async def test_no_program_answering_falls_back_and_all_failed_fails_typed() -> None:
    worker = ScriptedWorker(chat=lambda t: "no code here", tool=interpreter)
    out = await run(ProgramVoteController(sample_num=2), worker, "Q")
    assert out.output.answer is None and out.output.text == "no code here"
    assert out.output.metadata["fallback"] == "no_answer" and not worker.of(ToolCallTask)
    worker = ScriptedWorker(chat=lambda t: RuntimeError("backend down"), tool=interpreter)
    with pytest.raises(TaskFailed, match=r"all 2 samples failed.*backend down"):
        await run(ProgramVoteController(sample_num=2), worker, "Q")


def test_extract_program_from_what_models_write() -> None:
    assert extract_program("```python\nprint(1)\n```") == "print(1)"
    assert extract_program("```\nx = 2\nprint(x)\n```\ntext") == "x = 2\nprint(x)"
    assert extract_program("```py\nprint(1)\n```\n```python\nprint(2)\n```") == "print(2)"
    assert extract_program("```python\nprint(3)") == "print(3)"  # cut off by max_tokens
    assert extract_program("x = 4\nprint(x)") == "x = 4\nprint(x)"
    assert extract_program("def solve():\n    return 5\n") == "def solve():\n    return 5\n\nprint(solve())"
    assert extract_program("The answer is 5.") is None


async def python_tools() -> list[tuple[str, ToolsWorker]]:
    """The python tools this machine can run: the tools worker's sandbox (when the package has
    it and bwrap works here) and the benchmark's limited subprocess."""
    from benchmarks.local_python import LOCAL_PYTHON

    tools: list[tuple[str, ToolsWorker]] = [("local_python", ToolsWorker([LOCAL_PYTHON], python=False))]
    sandboxed = ToolsWorker([])  # the calculator-less worker with the sandboxed python tool
    try:
        assert sandboxed.sandbox is not None
        await sandboxed.sandbox.check()
    except SandboxUnavailable as exc:  # no bwrap on this machine: only CI's image may lack it
        warnings.warn(f"python sandbox unavailable here: {exc}", stacklevel=1)
    else:
        tools.append(("sandbox", sandboxed))
    return tools


async def test_programs_really_run_in_a_tools_worker_over_nats(nc, prefix) -> None:  # type: ignore[no-untyped-def]
    """The job goes through the controller service; the programs (scripted replies of the
    model) run for real in a python tool hosted by a ToolsWorker, and their output is voted."""
    subjects = Subjects(prefix)
    client = JobClient(nc, subjects=subjects)
    for label, tools_worker in await python_tools():
        async with (
            WorkerHost(nc, ScriptedWorker(chat=reply), tags=["generation"], subjects=subjects),
            WorkerHost(nc, tools_worker, tags=["tool_call"], subjects=subjects),
            ControllerService(nc, load_registry(), subjects=subjects),
        ):
            job = Job(method="program_vote", prompt="Janet's ducks...", params={"base_seed": 0})
            result = await client.run(job, timeout=60)
        assert result.answer == "18", label
        assert result.metadata["answers"] == ["18", "18", "32", None, None], label
        assert result.metadata["votes"] == {"18": 2, "32": 1}, label
