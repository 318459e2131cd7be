from __future__ import annotations

import pytest

from scaffolding_nats.proto.errors import ErrorCode
from scaffolding_nats.proto.tasks import TaskStatus, ToolCallTask
from scaffolding_nats.workers import ToolsWorker
from scaffolding_nats.workers.tools import CALCULATOR, Tool, ToolInputError, ToolResult, evaluate
from scaffolding_nats.workers.tools.calculator import format_number


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-3 ** 2", -9),
        ("(-3) ** 2", 9),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("7 / 2", 3.5),
        ("2 ** -1", 0.5),
        ("--4", 4),
        ("+5", 5),
        ("1.5 * 4", 6.0),
        ("2 ^ 10", 1024),
        ("2 ** 100", 2**100),
    ],
)
def test_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "x + 1",
        "__import__('os').system('echo hi')",
        "abs(-1)",
        "(1).real",
        "[1, 2]",
        "'a' * 3",
        "True + 1",
        "1 if 1 else 2",
        "1 << 100",
        "9 ** 9 ** 9",
        "10 ** 100000",
        "(10 ** 1000) ** 1000",
        "2.0 ** 100000",
        "1 / 0",
        "1 // 0",
        "5 % 0",
        "(-8) ** 0.5",
        "1 +",
        "1" * 2000,
        "(" * 500 + "1" + ")" * 500,
        "1e309",  # a literal that is already inf
        "-1e309",
        "1e308 * 10",
    ],
)
def test_refuses_anything_but_bounded_arithmetic(expression: str) -> None:
    with pytest.raises(ToolInputError):
        evaluate(expression)


def test_whole_floats_print_as_integers() -> None:
    assert format_number(4.0) == "4"
    assert format_number(3.5) == "3.5"
    assert format_number(12) == "12"


async def test_tools_worker_runs_the_calculator() -> None:
    worker = ToolsWorker()
    task = ToolCallTask(tool_name="calculator", arguments='{"expression": "(17 * 23) - 4 ** 2"}')
    assert await worker.run_task(task) is TaskStatus.SUCCESS
    assert task.result == "375"
    assert task.is_error is False
    assert task.exit_code == 0
    assert task.latency_s is not None


@pytest.mark.parametrize("arguments", ["not json", "[1]", '{"expr": "1"}', '{"expression": "x"}'])
async def test_bad_input_is_an_error_result_the_agent_can_read(arguments: str) -> None:
    task = ToolCallTask(tool_name="calculator", arguments=arguments)
    assert await ToolsWorker().run_task(task) is TaskStatus.SUCCESS
    assert task.is_error is True
    assert task.stderr and task.stderr.startswith("error:")
    assert task.exit_code == 1


async def test_unknown_tool_is_a_typed_not_supported_failure() -> None:
    task = ToolCallTask(tool_name="shell", arguments='{"cmd": "ls"}')
    assert await ToolsWorker().run_task(task) is TaskStatus.NOT_SUPPORTED
    assert task.error is not None and task.error.code is ErrorCode.NOT_SUPPORTED
    assert task.error.details["known"] == ["calculator", "python"]


async def test_definitions_and_custom_tools() -> None:
    async def shout(args: dict[str, object]) -> ToolResult:
        return ToolResult(result=str(args["text"]).upper())

    async def broken(args: dict[str, object]) -> ToolResult:
        raise RuntimeError("boom")

    from scaffolding_nats.proto.tasks import ToolDefinition

    worker = ToolsWorker([CALCULATOR, Tool(ToolDefinition(name="shout"), shout)], python=False)
    worker.add_tool(Tool(ToolDefinition(name="broken"), broken))
    assert [d.name for d in worker.definitions()] == ["calculator", "shout", "broken"]
    assert worker.definitions()[0].parameters["required"] == ["expression"]
    task = ToolCallTask(tool_name="shout", arguments='{"text": "hi"}')
    await worker.run_task(task)
    assert task.result == "HI"
    task = ToolCallTask(tool_name="broken")
    assert await worker.run_task(task) is TaskStatus.SUCCESS
    assert task.is_error and "RuntimeError: boom" in (task.stderr or "")


async def test_a_slow_tool_is_cut_off() -> None:
    import asyncio

    from scaffolding_nats.proto.tasks import ToolDefinition

    async def slow(args: dict[str, object]) -> ToolResult:
        await asyncio.sleep(10)
        return ToolResult(result="late")

    worker = ToolsWorker([Tool(ToolDefinition(name="slow"), slow)], call_timeout=0.1)
    task = ToolCallTask(tool_name="slow")
    await worker.run_task(task)
    assert task.is_error and task.exit_code == 124
