"""SyntheticWorker: a model-free backend with a fixed latency, for benchmarks and transport
tests. Its output is a deterministic function of the input, so merge-back is checkable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ..proto.tasks import GenerationTask, RewardTask, StreamingGenerationTask, ToolCallTask, Usage
from ..runtime.worker import Worker, handles, streams


class SyntheticWorker(Worker):
    """Generation returns the prompt's words reversed (one "token" per word); reward scores a
    candidate by its length; tool calls echo their arguments.

    ``latency_s``: sleep per task (per token when streaming, ``token_latency_s``); ``model``:
    the name it reports as served (it answers every task the same whatever the name);
    ``runs_log``: a file that gets one line, the task id, per generation run to its end (so a
    fault test can count the runs of each task, across worker processes).
    """

    def __init__(
        self,
        latency_s: float = 0.0,
        token_latency_s: float = 0.0,
        model: str = "synthetic",
        runs_log: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.latency_s = latency_s
        self.token_latency_s = token_latency_s
        self.runs_log = Path(runs_log) if runs_log else None
        self.started = 0
        self.finished = 0
        self.cancelled = 0

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        self.started += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        words = (task.input_str or "").split()[::-1]
        if task.max_tokens is not None:
            words = words[: task.max_tokens]
        task.fill(  # values built here: no validation per assignment (the hot path of the benchmarks)
            output_str=" ".join(words),
            output_tokens=list(range(len(words))),
            finish_reason="stop",
            usage=Usage(prompt_tokens=len(words), completion_tokens=len(words)),
        )
        self.finished += 1
        self._log_run(task.id)

    def _log_run(self, task_id: str) -> None:
        if self.runs_log is not None:
            with self.runs_log.open("a") as f:  # one short append per line: whole lines, any process
                f.write(task_id + "\n")

    @streams(StreamingGenerationTask)
    async def stream(self, task: StreamingGenerationTask) -> AsyncIterator[int]:
        self.started += 1
        words = (task.input_str or "").split()[::-1]
        if task.max_tokens is not None:
            words = words[: task.max_tokens]
        out: list[str] = []
        try:
            for word in words:
                if self.token_latency_s:
                    await asyncio.sleep(self.token_latency_s)
                out.append(word)
                task.output_str = " ".join(out)
                task.output_tokens = list(range(len(out)))
                task.usage = Usage(prompt_tokens=len(words), completion_tokens=len(out))
                yield 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        task.finish_reason = "stop"
        self.finished += 1
        self._log_run(task.id)

    async def served_models(self) -> list[str]:
        return [self.model]

    @handles(RewardTask)
    async def reward(self, task: RewardTask) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        task.scores = [float(len(c)) for c in task.candidates]
        if task.mode == "process":
            task.step_scores = [[float(len(s)) for s in steps] for steps in (task.steps or [])]

    @handles(ToolCallTask)
    async def tool(self, task: ToolCallTask) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        task.result = task.arguments
        task.exit_code = 0
