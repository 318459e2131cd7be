"""The whole system on one machine, with the real CPU model: nats-server, llama.cpp serving
SmolLM2-135M, a generation worker, a reward worker that judges through the same model's
Yes/No logprobs, a tools worker (calculator), and the controller service; jobs go in through
``JobClient`` exactly as a remote client's would.

The model serves one request at a time (~130 tokens/s on 2 cores), so every job here keeps
its token counts small. The model server lives for the session; each test module gets its
own subject prefix and stack, so modules never see each other's jobs.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from scaffolding_nats.client import JobClient
from scaffolding_nats.devstack import ModelServer, NatsServer
from scaffolding_nats.devstack.stack import local_stack
from scaffolding_nats.proto import ChatMessage, ChatTask, Job, JobEvent, JobEventType, JobResult, Subjects
from scaffolding_nats.proto.tasks import ToolCall, Usage
from scaffolding_nats.runtime import handles
from scaffolding_nats.transport import WorkerHost
from scaffolding_nats.workers import LogprobJudgeRewardWorker, OpenAIWorker
from scaffolding_nats.workers.tools_worker import ToolsWorker

JOB_TIMEOUT = 60.0
"""Deadline of one job, from submission to its result event (the slowest here take ~5 s)."""

SCRIPTED_CHAT_TAG = "scripted_chat"
"""A chat tag whose worker opens every conversation with a calculator call (see below)."""


class FirstTurnCalculator(OpenAIWorker):
    """The real model, except that a conversation without a tool result yet gets a scripted
    assistant turn calling ``calculator(17 * 23)``. SmolLM2 under llama.cpp's default chat
    format never emits tool calls, so this is how the agent's tool path runs for real: the
    call crosses the bus to the tools worker and the model answers from its result."""

    EXPRESSION = "17 * 23"
    RESULT = "391"

    @handles(ChatTask)
    async def chat(self, task: ChatTask) -> None:
        if any(m.role == "tool" for m in task.messages):
            await super().chat(task)
            return
        call = ToolCall(id="call_e2e_0", name="calculator", arguments=f'{{"expression": "{self.EXPRESSION}"}}')
        task.output_message = ChatMessage(role="assistant", content=None, tool_calls=[call])
        task.output_str = ""
        task.finish_reason = "tool_calls"
        task.usage = Usage(prompt_tokens=0, completion_tokens=1)


@dataclass
class Stack:
    """What a test needs of the running system."""

    client: JobClient
    subjects: Subjects
    model: ModelServer
    tools_host: WorkerHost

    async def run(self, job: Job, timeout: float = JOB_TIMEOUT) -> tuple[JobResult, list[JobEvent]]:
        """Submit ``job`` and collect its events up to the result; a job error fails the test
        with the error's message."""
        events = [e async for e in self.client.events(job, timeout=timeout)]
        assert [e.seq for e in events] == list(range(len(events))), "events are numbered without gaps"
        assert events[0].type is JobEventType.ACCEPTED
        last = events[-1]
        assert last.type is JobEventType.RESULT, f"{job.method} failed: {last.error}"
        assert last.result is not None
        return last.result, events


@pytest.fixture(scope="session")
def e2e_model() -> Iterator[ModelServer]:
    with ModelServer("smollm2", n_ctx=2048, n_threads=2) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    nats_server: NatsServer, e2e_model: ModelServer, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    subjects = Subjects(f"e2e{zlib.crc32(request.module.__name__.encode()) % 10**8}")
    base_url, model = e2e_model.base_url, e2e_model.model
    workers = [
        (OpenAIWorker(base_url, model=model, max_concurrency=4, timeout=30), ["generation"]),
        (LogprobJudgeRewardWorker(base_url, model, max_concurrency=4, timeout=30), ["reward"]),
        (FirstTurnCalculator(base_url, model=model, max_concurrency=2, timeout=30), [SCRIPTED_CHAT_TAG]),
        (ToolsWorker(), ["tool_call"]),
    ]
    async with local_stack(
        nats_server.url,
        subjects,
        workers,
        controller_options={"max_job_seconds": JOB_TIMEOUT},
        connect_options={"max_reconnect_attempts": 0},
    ) as up:
        yield Stack(JobClient(up.nc, subjects=subjects), subjects, e2e_model, up.hosts[-1])
