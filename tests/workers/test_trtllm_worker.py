"""TrtLlmWorker against a stand-in engine shaped like tensorrt_llm's LLM API (no GPU here):
field mapping, results, streaming with abort on early close, and typed refusals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from scaffolding_nats.proto import ErrorCode, GenerationTask, StreamingGenerationTask, TaskStatus
from scaffolding_nats.runtime import RequestContext, TaskRunner
from scaffolding_nats.workers.trtllm_worker import TrtLlmWorker


@dataclass
class Result:
    """Like tensorrt_llm's GenerationResult: awaitable, async-iterable when streaming, abortable."""

    words: list[str]
    streaming: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3])
    finished: bool = False
    aborted: bool = False
    emitted: int = 0

    @property
    def outputs(self) -> list[SimpleNamespace]:
        ids = list(range(self.emitted))
        alternatives = [
            {i: SimpleNamespace(logprob=-0.5, rank=1), 99: SimpleNamespace(logprob=-2.0, rank=2)} for i in ids
        ]
        return [
            SimpleNamespace(
                text=" ".join(self.words[: self.emitted]),
                token_ids=ids,
                finish_reason="stop" if self.finished else None,
                logprobs=alternatives,
            )
        ]

    def __await__(self) -> Any:
        async def run() -> Result:
            self.emitted, self.finished = len(self.words), True
            return self

        return run().__await__()

    async def __aiter__(self) -> Any:
        while self.emitted < len(self.words):
            await asyncio.sleep(0.001)
            self.emitted += 1
            self.finished = self.emitted == len(self.words)
            yield self

    def abort(self) -> None:
        self.aborted = True


class Engine:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any], bool]] = []
        self.results: list[Result] = []
        self.tokenizer = SimpleNamespace(decode=lambda ids: f"<{ids[0]}>")

    def generate_async(self, prompt: Any, *, sampling_params: Any, streaming: bool = False) -> Result:
        self.calls.append((prompt, sampling_params, streaming))
        self.results.append(Result(words=str(prompt).split()[::-1], streaming=streaming))
        return self.results[-1]


async def _worker() -> tuple[TrtLlmWorker, Engine]:
    engine = Engine()
    worker = TrtLlmWorker(llm=engine, sampling_params_factory=dict)
    await worker.start()
    return worker, engine


async def test_generation_maps_sampling_fields_and_fills_results():
    worker, engine = await _worker()
    task = GenerationTask(
        input_str="a b c", max_tokens=5, temperature=0.0, top_k=4, seed=7, stop=["\n"], num_logprobs=2, ignore_eos=True
    )
    await worker.run_task(task)
    assert task.status is TaskStatus.SUCCESS
    assert engine.calls[0][1] == {
        "max_tokens": 5,
        "temperature": 0.0,
        "top_k": 4,
        "seed": 7,
        "stop": ["\n"],
        "logprobs": 2,
        "ignore_eos": True,
    }
    assert task.output_str == "c b a" and task.output_tokens == [0, 1, 2] and task.finish_reason == "stop"
    assert task.usage is not None and (task.usage.prompt_tokens, task.usage.completion_tokens) == (3, 3)
    assert task.logprobs is not None and task.logprobs[0].token == "<0>" and task.logprobs[0].logprob == -0.5
    assert task.logprobs[0].top is not None and {t.token for t in task.logprobs[0].top} == {"<0>", "<99>"}


async def test_streaming_steps_and_early_cancel_aborts_the_request():
    worker, engine = await _worker()
    runner = TaskRunner({"generation": worker})
    ctx = RequestContext()
    task = StreamingGenerationTask(input_str=" ".join(f"w{i}" for i in range(30)), streaming_step=4)
    await runner.run([task], ctx)
    assert not task.end_flag and len(task.output_tokens or []) >= 4 and task.ttft_s is not None
    task.cancel_flag = True
    await runner.run([task], ctx)
    assert task.end_flag and task.status is TaskStatus.CANCELLED
    assert engine.results[0].aborted and engine.calls[0][2] is True


async def test_a_stream_run_to_the_end_is_not_aborted():
    worker, engine = await _worker()
    runner = TaskRunner({"generation": worker})
    task = StreamingGenerationTask(input_str="x y", streaming_step=100)
    await runner.run([task], RequestContext())
    assert task.end_flag and task.status is TaskStatus.SUCCESS and task.output_str == "y x"
    assert not engine.results[0].aborted


async def test_unsupported_fields_are_refused_typed():
    worker, _ = await _worker()
    task = GenerationTask(input_str="x", echo=True)
    await worker.run_task(task)
    assert task.status is TaskStatus.NOT_SUPPORTED and task.error is not None
    assert task.error.code is ErrorCode.NOT_SUPPORTED
