"""The runtime's promises, each checked in-process and over NATS (``bind`` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from scaffolding_nats import (
    Controller,
    GenerationTask,
    Output,
    ParallelProcess,
    RewardTask,
    ScaffoldingLlm,
    TaskStatus,
)
from scaffolding_nats.errors import ControllerError, TaskFailed
from scaffolding_nats.proto import ErrorCode
from scaffolding_nats.runtime import TaskCollection, with_task_collection
from scaffolding_nats.workers.synthetic import SyntheticWorker

from .workers import Failing, Rendezvous


class Native(Controller):
    def process(self, tasks, **kwargs):
        yield tasks


class Fan(Controller):
    """N samples in one yield."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def process(self, tasks, **kwargs):
        samples = [GenerationTask(input_str=f"{tasks[0].input_str} {i}") for i in range(self.n)]
        yield samples
        tasks[0].copy_results_from(samples[0])
        tasks[0].output_str = ",".join(s.output_str or "" for s in samples)


class Nested(Controller):
    """A 2-level parallel group: outer branches each run an inner parallel group."""

    def __init__(self, outer: int, inner: int, leaf: Controller | None = None) -> None:
        super().__init__()
        self.outer, self.inner, self.leaf = outer, inner, leaf

    def process(self, tasks, **kwargs):
        if self.leaf is None:  # inner level
            branches = [Native() for _ in range(self.inner)]
            lists = [[GenerationTask(input_str=f"{tasks[0].input_str}.{i}")] for i in range(self.inner)]
            yield ParallelProcess(branches, lists)
            tasks[0].output_str = "+".join(t[0].output_str or "" for t in lists)
            tasks[0].status = TaskStatus.SUCCESS
            return
        branches = [Nested(0, self.inner) for _ in range(self.outer)]
        lists = [[GenerationTask(input_str=f"b{i}")] for i in range(self.outer)]
        yield ParallelProcess(branches, lists)
        tasks[0].output_str = "|".join(t[0].output_str or "" for t in lists)
        tasks[0].status = TaskStatus.SUCCESS


async def test_requests_run_concurrently(bind):
    worker = Rendezvous(expect=6)
    async with ScaffoldingLlm(Native(), await bind({"generation": worker})) as llm:
        results = await asyncio.gather(*(llm.generate_async(f"p{i}") for i in range(6)))
    assert sorted(r.outputs[0].text for r in results) == [f"P{i}" for i in range(6)]
    assert worker.peak == 6


async def test_tasks_of_one_yield_run_concurrently_and_merge_back(bind):
    worker = Rendezvous(expect=8)
    async with ScaffoldingLlm(Fan(8), await bind({"generation": worker})) as llm:
        result = await llm.generate_async("q")
    assert result.outputs[0].text == ",".join(f"Q {i}" for i in range(8))
    assert result.outcome is not None and result.outcome.num_tasks == 8
    assert result.outcome.usage.completion_tokens == 24


async def test_two_level_nested_parallel_groups_run_concurrently(bind):
    worker = Rendezvous(expect=3 * 4)
    async with ScaffoldingLlm(Nested(3, 4, leaf=Native()), await bind({"generation": worker})) as llm:
        result = await llm.generate_async("x")
    assert result.outputs[0].text == "|".join("+".join(f"B{i}.{j}" for j in range(4)) for i in range(3))
    assert worker.peak == 12


class Mixed(Controller):
    def process(self, tasks, **kwargs):
        gen = GenerationTask(input_str="a")
        reward = RewardTask(candidates=["xx", "yyy"])
        yield [gen, reward]
        tasks[0].copy_results_from(gen)
        tasks[0].output_str = f"{gen.output_str}:{reward.scores}"


async def test_one_yield_spans_different_tags_concurrently(bind):
    worker = Rendezvous(expect=2)
    async with ScaffoldingLlm(Mixed(), await bind({"generation": worker, "reward": worker})) as llm:
        result = await llm.generate_async("x")
    assert result.outputs[0].text == "A:[2.0, 3.0]"


class Careful(Controller):
    """Sees a failure as data: status and error, never an empty success."""

    def generate(self, prompt, **kwargs):
        task = GenerationTask(input_str=prompt)
        yield [task]
        return Output(text=f"{task.status.value}/{task.error.code.value if task.error else None}")


async def test_failed_task_is_visible_to_the_controller(bind):
    async with ScaffoldingLlm(Careful(), await bind({"generation": Failing()})) as llm:
        result = await llm.generate_async("x")
    assert result.outputs[0].text == "worker_error/worker_error"


async def test_failed_task_fails_the_request_with_its_cause(bind):
    async with ScaffoldingLlm(Native(), await bind({"generation": Failing()})) as llm:
        with pytest.raises(TaskFailed) as info:
            await llm.generate_async("x")
    assert "backend exploded" in info.value.message


async def test_task_for_an_unbound_tag_fails_with_no_worker():
    async with ScaffoldingLlm(Native(), {"reward": SyntheticWorker()}) as llm:
        with pytest.raises(TaskFailed) as info:
            await llm.generate_async("x")
    assert info.value.code is ErrorCode.NO_WORKER


class Broken(Controller):
    def process(self, tasks, **kwargs):
        yield tasks
        raise KeyError("missing-thing")


async def test_controller_exception_becomes_a_controller_error_naming_the_cause(bind):
    async with ScaffoldingLlm(Broken(), await bind({"generation": SyntheticWorker()})) as llm:
        with pytest.raises(ControllerError) as info:
            await llm.generate_async("x")
    assert "KeyError" in info.value.message and "missing-thing" in info.value.message


async def test_request_cap_queues_in_fifo_order():
    order: list[str] = []

    class Recording(Native):
        def process(self, tasks, **kwargs):
            order.append(tasks[0].input_str)
            yield tasks

    async with ScaffoldingLlm(
        Recording(), {"generation": SyntheticWorker(0.01)}, max_parallel_requests=1
    ) as llm:
        results = [llm.generate_async(f"r{i}") for i in range(5)]
        await asyncio.gather(*results)
    assert order == [f"r{i}" for i in range(5)]


class Counting(TaskCollection):
    def __init__(self) -> None:
        self.tasks = 0
        self.groups = 0

    def after_yield(self, tasks):
        self.tasks += len(tasks)

    def on_parallel_start(self, group):
        self.groups += 1


async def test_task_collections_see_nested_branches(bind):
    seen: list[Counting] = []

    def factory() -> Counting:
        seen.append(Counting())
        return seen[-1]

    Observed = with_task_collection("count", factory)(type("Observed", (Nested,), {}))
    async with ScaffoldingLlm(
        Observed(2, 3, leaf=Native()), await bind({"generation": SyntheticWorker()})
    ) as llm:
        await llm.generate_async("x")
    used = [c for c in seen if c.tasks]
    assert len(used) == 1  # the request's clone got its own collection
    assert used[0].tasks == 6 and used[0].groups == 3  # 1 outer + 2 inner groups


def test_sync_generate_runs_a_batch():
    with ScaffoldingLlm(Native(), {"generation": SyntheticWorker(0.01)}) as llm:
        results = llm.generate(["a b", "c d"])
    assert [r.outputs[0].text for r in results] == ["b a", "d c"]


def test_yielding_something_else_is_a_type_error():
    class Wrong(Controller):
        def generate(self, prompt, **kwargs):
            yield "not a task"
            return Output(text="")

    with (
        ScaffoldingLlm(Wrong(), {"generation": SyntheticWorker()}) as llm,
        pytest.raises(ControllerError) as info,
    ):
        llm.generate("x")
    assert "yielded str" in info.value.message
