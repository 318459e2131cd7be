"""TrtLlmWorker: generation on a GPU through TensorRT-LLM's ``LLM`` API, in-process.

``tensorrt_llm`` ships with NVIDIA's TensorRT-LLM container (``services/worker-trtllm``), not
from PyPI, so it is imported only when the worker starts. Tests drive the same code with a
stand-in engine that keeps the library's defaults; ``services/worker-trtllm/gpu_check.py``
checks the real engine on a GPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

from ..errors import ScaffoldingError
from ..proto.tasks import GenerationChoice, GenerationTask, StreamingGenerationTask, TokenLogprob, TopLogprob, Usage
from ..runtime.fanout import gather_or_cancel
from ..runtime.worker import Worker, handles, streams
from .errors import BackendError, NotSupported
from .trtllm_params import (
    BACKENDS,
    SAMPLERS,
    Backend,
    Sampler,
    llm_args,
    random_seed,
    refuse_unsupported,
    sampling_kwargs,
)

log = logging.getLogger(__name__)


class TrtLlmWorker(Worker):
    """Generation and streamed generation on one engine held by this process.

    * ``model``: a Hugging Face folder (``backend="pytorch"``, the default) or a built engine
      directory (``backend="tensorrt"``, which loads it with the TensorRT backend's ``LLM``).
    * ``sampler``: ``TRTLLMSampler`` (default: honours per-request seeds, penalties, min_tokens)
      or ``TorchSampler``; always passed, since the library's default moved between releases.
    * ``max_concurrency``: sequences in the engine at once (a task with ``n`` samples takes n),
      which is also the engine's ``max_batch_size`` unless that is given (it may not be smaller).
    * ``kv_cache_config``: ``KvCacheConfig`` fields; ``enable_block_reuse`` stays on unless set
      false, so the samples of one prompt, and every step of a search that extends it, reuse
      its KV blocks (the engine matches blocks by their tokens: no per-request hint is needed);
      the result's ``cached_tokens`` becomes ``usage.cached_tokens``.
    * ``default_max_tokens``: for tasks without ``max_tokens`` (the engine's default is 32).
    * ``default_temperature``: for tasks that set no temperature, top_k or top_p: 1.0 as in the
      OpenAI API, so a vote's samples differ; ``None`` keeps the engine's greedy default.
    * ``llm``: a ready ``LLM`` instead of ``model``; ``api``: what provides ``LLM``,
      ``SamplingParams`` and ``KvCacheConfig`` (default: ``tensorrt_llm``'s, imported at start).
    * other keywords go to ``LLM(...)`` (``tensor_parallel_size``, ``max_seq_len``, ...).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        llm: Any = None,
        backend: Backend = "pytorch",
        sampler: Sampler = "TRTLLMSampler",
        max_concurrency: int | None = None,
        kv_cache_config: dict[str, Any] | None = None,
        default_max_tokens: int = 2048,
        default_temperature: float | None = 1.0,
        api: Any = None,
        **llm_kwargs: Any,
    ) -> None:
        super().__init__()
        if model is None and llm is None:
            raise ValueError("TrtLlmWorker needs a model path or an LLM instance")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS} (not {sampler!r}: 'auto' differs by release)")
        if backend == "tensorrt" and sampler != "TRTLLMSampler":
            raise ValueError("the TensorRT backend samples in its C++ runtime: sampler must be TRTLLMSampler")
        batch: int | None = llm_kwargs.pop("max_batch_size", None)
        concurrency = max_concurrency if max_concurrency is not None else batch if batch is not None else 256
        self.max_concurrency: int = concurrency
        self.max_batch_size: int = batch if batch is not None else concurrency
        if not 1 <= self.max_concurrency <= self.max_batch_size:
            raise ValueError(
                f"max_concurrency ({self.max_concurrency}) must be between 1 and max_batch_size "
                f"({self.max_batch_size}): more would queue inside the engine, unseen by the bus"
            )
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        self.model = model
        self.llm = llm
        self.backend: Backend = backend
        self.sampler: Sampler = sampler
        self.kv_cache_config = dict(kv_cache_config or {})
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        self.api = api
        self.llm_kwargs = llm_kwargs
        self._own_llm = llm is None
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def start(self) -> None:
        if self.api is None:
            self.api = _import_api(self.backend)  # in this thread: the library may set signal handlers
        if self.llm is None:
            self.llm = await asyncio.to_thread(self.api.LLM, self.model, **self.engine_args())

    def engine_args(self) -> dict[str, Any]:
        """What ``start()`` passes to ``LLM(model, ...)``."""
        kv = self.api.KvCacheConfig(**{"enable_block_reuse": True, **self.kv_cache_config})
        return llm_args(
            self.llm_kwargs,
            backend=self.backend,
            sampler=self.sampler,
            max_batch_size=self.max_batch_size,
            kv_cache_config=kv,
            arg_fields=getattr(self.api, "llm_arg_fields", None),
        )

    async def stop(self) -> None:
        if self._own_llm and self.llm is not None:
            await asyncio.to_thread(self.llm.shutdown)
            self.llm = None

    def params(self, task: GenerationTask, *, streaming: bool = False) -> list[Any]:
        """One ``SamplingParams`` per sample: ``n`` > 1 is sent as n requests with seeds
        ``seed + i``, so every choice is filled and no two share a seed."""
        refuse_unsupported(task, self.sampler, streaming=streaming, default_temperature=self.default_temperature)
        assert self.api is not None, "start() the worker first"
        base = task.seed if task.seed is not None else random_seed()
        try:
            return [
                self.api.SamplingParams(
                    **sampling_kwargs(
                        task,
                        seed=base + i,
                        default_max_tokens=self.default_max_tokens,
                        default_temperature=self.default_temperature,
                    )
                )
                for i in range(task.n or 1)
            ]
        except (TypeError, ValueError) as exc:
            raise NotSupported(f"TensorRT-LLM refused the sampling parameters: {exc}") from exc

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        requests = self.params(task)
        prompt = _prompt(task)
        started = time.perf_counter()
        results = await gather_or_cancel(self._complete(prompt, params) for params in requests)
        self._fill(task, results, [self._reader(task) for _ in results], started)

    @streams(StreamingGenerationTask)
    async def stream(self, task: StreamingGenerationTask) -> AsyncIterator[int]:
        (params,) = self.params(task, streaming=True)
        prompt = _prompt(task)
        started = time.perf_counter()
        reader = self._reader(task)  # kept across steps: each token's log-probs are read once
        seen = 0
        async with self._slots:
            result = self._submit(prompt, params, streaming=True)
            steps = aiter(result)
            try:
                while True:
                    try:
                        partial = await anext(steps)
                    except StopAsyncIteration:
                        break
                    except ScaffoldingError:
                        raise
                    except Exception as exc:
                        raise _backend_error(exc) from exc
                    self._fill(task, [partial], [reader], started)
                    now = len(task.output_tokens or [])
                    if task.ttft_s is None and now:
                        task.ttft_s = time.perf_counter() - started
                    yield now - seen
                    seen = now
            finally:
                if not getattr(result, "finished", True):
                    _abort(result)  # the controller stopped listening: free the sequence slot

    async def _complete(self, prompt: Any, params: Any) -> Any:
        """One request to its end; cancelled, it is aborted on the GPU too."""
        async with self._slots:
            result = self._submit(prompt, params, streaming=False)
            try:
                return await result
            except ScaffoldingError:
                raise
            except Exception as exc:
                raise _backend_error(exc) from exc
            finally:
                if not getattr(result, "finished", True):
                    _abort(result)

    def _submit(self, prompt: Any, params: Any, *, streaming: bool) -> Any:
        try:
            return self.llm.generate_async(prompt, sampling_params=params, streaming=streaming)
        except (TypeError, ValueError) as exc:  # the LLM API's own argument checks
            raise NotSupported(f"TensorRT-LLM refused the request: {exc}") from exc

    def _reader(self, task: GenerationTask) -> _LogprobReader | None:
        if task.num_logprobs is None:
            return None
        decode = getattr(getattr(self.llm, "tokenizer", None), "decode", None)
        return _LogprobReader(task.num_logprobs, (lambda i: str(decode([i]))) if decode else str)

    def _fill(
        self, task: GenerationTask, results: list[Any], readers: list[_LogprobReader | None], started: float
    ) -> None:
        choices, prompt_tokens, cached = [], 0, 0
        for result, reader in zip(results, readers, strict=True):
            out = result.outputs[0]
            prompt_tokens += len(getattr(result, "prompt_token_ids", None) or [])
            reused = getattr(result, "cached_tokens", None)  # the prompt tokens block reuse served
            cached += reused if isinstance(reused, int) and reused > 0 else 0
            choices.append(
                GenerationChoice(
                    text=out.text,
                    token_ids=list(out.token_ids),
                    finish_reason=out.finish_reason,
                    logprobs=reader.read(out) if reader is not None else None,
                )
            )
        first = choices[0]
        task.output_str = first.text
        task.output_tokens = first.token_ids
        task.finish_reason = first.finish_reason
        task.logprobs = first.logprobs
        task.choices = choices if len(choices) > 1 else None
        completion = sum(len(c.token_ids or ()) for c in choices)
        task.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, cached_tokens=cached)
        task.latency_s = time.perf_counter() - started


class _LogprobReader:
    """The engine's per-token ``{token_id: Logprob(logprob, rank)}`` maps (the top ``k`` and the
    chosen token) as TokenLogprobs with ``k`` alternatives. A stream's tokens are each read once,
    not again at every step."""

    def __init__(self, k: int, text: Callable[[int], str]) -> None:
        self.k = k
        self.text = text
        self.entries: list[TokenLogprob] = []

    def read(self, out: Any) -> list[TokenLogprob] | None:
        raw, ids = getattr(out, "logprobs", None) or [], out.token_ids
        done = min(len(raw), len(ids))
        del self.entries[done:]  # a stop string trims the last tokens at the end
        self.entries += [self._entry(ids[i], raw[i]) for i in range(len(self.entries), done)]
        return list(self.entries) or None

    def _entry(self, token_id: int, item: Any) -> TokenLogprob:
        if not isinstance(item, dict):  # a bare float: the chosen token's log-prob only
            return TokenLogprob(token=self.text(token_id), token_id=token_id, logprob=float(item))
        if token_id not in item:
            raise BackendError("TensorRT-LLM's log-probs miss the chosen token", details={"token_id": token_id})
        ranked = sorted(item.items(), key=lambda kv: -_value(kv[1]))[: self.k]
        top = [TopLogprob(token=self.text(tid), logprob=_value(lp)) for tid, lp in ranked] if self.k else None
        return TokenLogprob(token=self.text(token_id), token_id=token_id, logprob=_value(item[token_id]), top=top)


def _prompt(task: GenerationTask) -> Any:
    if task.input_tokens is not None:
        return list(task.input_tokens)
    if task.input_str is not None:
        return task.input_str
    raise NotSupported("a generation task needs input_str or input_tokens")


def _value(logprob: Any) -> float:
    return float(getattr(logprob, "logprob", logprob))


def _backend_error(exc: Exception) -> BackendError:
    return BackendError(f"TensorRT-LLM failed the request: {type(exc).__name__}: {exc}")


def _abort(result: Any) -> None:
    """Stop the request on the GPU: neither a cancelled await nor a closed stream does."""
    try:
        result.abort()
    except Exception:
        log.warning("could not abort a TensorRT-LLM request", exc_info=True)


def _import_api(backend: Backend) -> SimpleNamespace:
    """``tensorrt_llm``'s classes for ``backend``, and the names its ``TorchLlmArgs`` accepts."""
    import tensorrt_llm
    from tensorrt_llm.llmapi import KvCacheConfig

    fields: frozenset[str] | None = None
    if backend == "tensorrt":
        from tensorrt_llm._tensorrt_engine import LLM
    else:
        from tensorrt_llm import LLM

        try:
            from tensorrt_llm.llmapi.llm_args import TorchLlmArgs

            fields = frozenset(TorchLlmArgs.model_fields)
        except (ImportError, AttributeError):
            log.warning("tensorrt_llm.llmapi.llm_args.TorchLlmArgs not found: passing sampler_type")
    return SimpleNamespace(
        LLM=LLM, SamplingParams=tensorrt_llm.SamplingParams, KvCacheConfig=KvCacheConfig, llm_arg_fields=fields
    )
