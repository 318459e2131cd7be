"""Task fields -> ``tensorrt_llm.SamplingParams`` keywords, and the worker's ``LLM(...)`` arguments.

Pure functions, so what reaches the engine is testable without a GPU. The engine's defaults are
what makes a plain mapping wrong (``tensorrt_llm/sampling_params.py``, ``llmapi/llm_args.py``):

* ``max_tokens`` defaults to 32, so it is always set (the task's, else the worker's default).
* Without ``top_k``/``top_p`` the C++ sampling layer turns ``top_k=0, top_p=0`` into greedy
  decoding whatever the temperature, and the LLM API refuses ``n > 1`` for the same reason: a
  sampled request therefore always carries ``top_p`` (1.0 when the task set none).
* An unseeded request uses seed 0 on the TRTLLMSampler: N samples of one prompt are N copies.
  Every request gets a seed: the task's, else a random one.
* The TorchSampler (up to mid-2026) ignores per-request seeds, presence/frequency penalties and
  ``min_tokens``: a task that sets them is refused rather than silently served without them.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any, Literal

from ..proto.tasks import GenerationTask
from .errors import NotSupported

Sampler = Literal["TRTLLMSampler", "TorchSampler"]
Backend = Literal["pytorch", "tensorrt"]
SAMPLERS: tuple[Sampler, ...] = ("TRTLLMSampler", "TorchSampler")
BACKENDS: tuple[Backend, ...] = ("pytorch", "tensorrt")

SEED_SPACE = 2**64  # the engine's seeds are uint64; task seeds are int64 and map onto them

# Same name and meaning on both sides; passed only when the task sets them.
_PASSED = ("min_tokens", "stop", "presence_penalty", "frequency_penalty", "ignore_eos", "min_p", "repetition_penalty")


def random_seed() -> int:
    return secrets.randbits(63)


def is_greedy(task: GenerationTask, default_temperature: float | None) -> bool:
    """Greedy when the task says so (temperature 0, top_k 1), or sets nothing and the worker's
    default temperature is ``None`` (the engine's own default, which is greedy)."""
    if task.temperature == 0 or task.top_k == 1:
        return True
    unset = task.temperature is None and task.top_k is None and task.top_p is None
    return unset and default_temperature in (None, 0)


def refuse_unsupported(
    task: GenerationTask, sampler: Sampler, *, streaming: bool, default_temperature: float | None
) -> None:
    """Raise ``NotSupported`` for what the engine would drop, fake or cannot fit in a reply."""
    if task.echo or task.suffix is not None or task.logit_bias:
        raise NotSupported("echo, suffix and logit_bias are not supported by the TensorRT-LLM worker")
    if task.return_context_logits:
        raise NotSupported(
            "context logits are prompt length x vocabulary floats (~152M for 1k tokens of Qwen), far "
            "beyond a message: ask for num_logprobs instead"
        )
    n = task.n or 1
    if task.best_of is not None and task.best_of != n:
        raise NotSupported("best_of is not supported: yield best_of tasks and rank them (best_of_n)")
    if streaming and n > 1:
        raise NotSupported("a streamed generation follows one sample: yield n streaming tasks")
    if n > 1 and is_greedy(task, default_temperature):
        raise NotSupported("n > 1 with greedy decoding returns n copies of one output: set a temperature")
    if sampler == "TorchSampler":
        ignored = [
            name
            for name, value in (
                ("seed", task.seed),
                ("presence_penalty", task.presence_penalty or None),
                ("frequency_penalty", task.frequency_penalty or None),
                ("min_tokens", task.min_tokens if (task.min_tokens or 0) > 1 else None),
            )
            if value is not None
        ]
        if ignored:
            raise NotSupported(
                f"the TorchSampler ignores {', '.join(ignored)}: run this worker with sampler TRTLLMSampler",
                details={"sampler": sampler, "fields": ignored},
            )


def sampling_kwargs(
    task: GenerationTask,
    *,
    seed: int,
    default_max_tokens: int,
    default_temperature: float | None,
) -> dict[str, Any]:
    """Keywords of one single-sample request (``n`` > 1 is sent as n requests, seeds ``seed + i``)."""
    kwargs: dict[str, Any] = {
        "max_tokens": task.max_tokens if task.max_tokens is not None else default_max_tokens,
        "seed": seed % SEED_SPACE,
    }
    if is_greedy(task, default_temperature):
        kwargs["top_k"] = 1  # greedy on both samplers, and no division by a zero temperature
    else:
        unset = task.temperature is None and task.top_k is None and task.top_p is None
        temperature = default_temperature if unset else task.temperature
        if temperature is not None:
            kwargs["temperature"] = temperature
        if task.top_k is not None:
            kwargs["top_k"] = task.top_k
        kwargs["top_p"] = task.top_p if task.top_p is not None else 1.0
    for name in _PASSED:
        if getattr(task, name) is not None:
            kwargs[name] = getattr(task, name)
    if task.num_logprobs is not None:  # 0: the chosen token's log-prob alone, which the engine's 0 omits
        kwargs["logprobs"] = max(task.num_logprobs, 1)
    return kwargs


def llm_args(
    llm_kwargs: dict[str, Any],
    *,
    backend: Backend,
    sampler: Sampler,
    max_batch_size: int,
    kv_cache_config: Any,
    arg_fields: Collection[str] | None,
) -> dict[str, Any]:
    """``LLM(model, **these)``: the caller's arguments plus the ones the worker relies on.

    ``arg_fields`` are the names the installed ``TorchLlmArgs`` accepts (``None``: unknown): the
    sampler switch was ``enable_trtllm_sampler`` in early 1.0 release candidates, ``sampler_type``
    since; on 1.0 the TorchSampler honours per-request sampling only with ``enable_mixed_sampler``."""
    args = {**llm_kwargs, "max_batch_size": max_batch_size, "kv_cache_config": kv_cache_config}
    if backend == "tensorrt":  # the C++ runtime samples; in-flight batching is its default
        return args
    fields = arg_fields if arg_fields is not None else ("sampler_type",)
    if "sampler_type" in fields:
        args["sampler_type"] = sampler
    elif "enable_trtllm_sampler" in fields:
        args["enable_trtllm_sampler"] = sampler == "TRTLLMSampler"
    else:
        raise ValueError("this tensorrt_llm has no sampler switch (sampler_type or enable_trtllm_sampler)")
    if sampler == "TorchSampler" and "enable_mixed_sampler" in fields:
        args.setdefault("enable_mixed_sampler", True)
    return args
