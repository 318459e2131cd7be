"""TrtLlmWorker: generation on a GPU through TensorRT-LLM's ``LLM`` API, in-process.

``tensorrt_llm`` ships with NVIDIA's TensorRT-LLM container (``services/worker-trtllm``), not
from PyPI, so it is imported only when the worker starts. Tests drive the same code with a
stand-in engine; the GPU path itself is exercised on a machine that has one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..proto.tasks import GenerationTask, StreamingGenerationTask, TokenLogprob, TopLogprob, Usage
from ..runtime.worker import Worker, handles, streams
from .errors import NotSupported

# Task field -> tensorrt_llm.SamplingParams field (same meaning; None means "engine default").
_SAMPLING = {
    "max_tokens": "max_tokens",
    "min_tokens": "min_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "n": "n",
    "best_of": "best_of",
    "ignore_eos": "ignore_eos",
    "num_logprobs": "logprobs",
    "return_context_logits": "return_context_logits",
}


class TrtLlmWorker(Worker):
    """``model``: a Hugging Face folder or engine directory, loaded at ``start()`` with
    ``llm_kwargs`` (e.g. ``tensor_parallel_size``, ``kv_cache_config``); or pass a ready ``llm``.
    ``max_concurrency`` bounds requests handed to the engine (its own scheduler batches them)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        llm: Any = None,
        max_concurrency: int = 256,
        sampling_params_factory: Callable[..., Any] | None = None,
        **llm_kwargs: Any,
    ) -> None:
        super().__init__()
        if model is None and llm is None:
            raise ValueError("TrtLlmWorker needs a model path or an LLM instance")
        self.model = model
        self.llm = llm
        self.llm_kwargs = llm_kwargs
        self._own_llm = llm is None
        self._sampling_params = sampling_params_factory
        self._slots = asyncio.Semaphore(max_concurrency)

    async def start(self) -> None:
        if self._sampling_params is None:
            from tensorrt_llm import SamplingParams

            self._sampling_params = SamplingParams
        if self.llm is None:
            from tensorrt_llm import LLM

            self.llm = await asyncio.to_thread(LLM, self.model, **self.llm_kwargs)

    async def stop(self) -> None:
        if self._own_llm and self.llm is not None:
            await asyncio.to_thread(self.llm.shutdown)
            self.llm = None

    def params(self, task: GenerationTask) -> Any:
        if task.echo or task.suffix is not None or task.logit_bias:
            raise NotSupported("echo, suffix and logit_bias are not supported by the TensorRT-LLM worker")
        values = {dst: getattr(task, src) for src, dst in _SAMPLING.items() if getattr(task, src) is not None}
        assert self._sampling_params is not None, "start() the worker first"
        return self._sampling_params(**values)

    def _prompt(self, task: GenerationTask) -> Any:
        return task.input_tokens if task.input_tokens is not None else (task.input_str or "")

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        params = self.params(task)
        started = time.perf_counter()
        async with self._slots:
            result = await self.llm.generate_async(self._prompt(task), sampling_params=params)
        self._fill(task, result, started)

    @streams(StreamingGenerationTask)
    async def stream(self, task: StreamingGenerationTask) -> AsyncIterator[int]:
        params = self.params(task)
        started = time.perf_counter()
        seen = 0
        async with self._slots:
            result = self.llm.generate_async(self._prompt(task), sampling_params=params, streaming=True)
            try:
                async for partial in result:
                    self._fill(task, partial, started)
                    now = len(task.output_tokens or [])
                    if task.ttft_s is None and now:
                        task.ttft_s = time.perf_counter() - started
                    yield now - seen
                    seen = now
            finally:
                if not getattr(result, "finished", True):
                    result.abort()  # the controller stopped listening: free the sequence slot

    def _fill(self, task: GenerationTask, result: Any, started: float) -> None:
        out = result.outputs[0]
        task.output_str = out.text
        task.output_tokens = list(out.token_ids)
        task.finish_reason = out.finish_reason
        task.logprobs = self._logprobs(out) if task.num_logprobs is not None else None
        prompt_tokens = len(getattr(result, "prompt_token_ids", None) or [])
        task.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(task.output_tokens))
        task.latency_s = time.perf_counter() - started
        if task.return_context_logits and getattr(result, "context_logits", None) is not None:
            task.context_logits = result.context_logits.tolist()

    def _logprobs(self, out: Any) -> list[TokenLogprob] | None:
        """The engine gives, per token, either a float or a map token_id -> Logprob(logprob, rank)."""
        raw = getattr(out, "logprobs", None)
        if not raw:
            return None
        decode = getattr(getattr(self.llm, "tokenizer", None), "decode", None)

        def text(token_id: int) -> str:
            return str(decode([token_id])) if decode is not None else str(token_id)

        entries = []
        for token_id, item in zip(out.token_ids, raw, strict=False):
            if isinstance(item, dict):
                top = [TopLogprob(token=text(tid), logprob=_value(lp)) for tid, lp in item.items()]
                chosen = item.get(token_id)
                value = _value(chosen) if chosen is not None else max(t.logprob for t in top)
                entries.append(TokenLogprob(token=text(token_id), token_id=token_id, logprob=value, top=top))
            else:
                entries.append(TokenLogprob(token=text(token_id), token_id=token_id, logprob=float(item)))
        return entries


def _value(logprob: Any) -> float:
    return float(getattr(logprob, "logprob", logprob))
