"""Task fields → OpenAI request arguments.

Pure functions, so the mapping is testable without a server. ``None`` fields are left out so
the backend's own defaults apply; fields outside the OpenAI schema (``top_k``, ``min_p``,
``min_tokens``, ``ignore_eos``, ``repetition_penalty``) travel in ``extra_body``, which vLLM,
trtllm-serve and llama.cpp read. llama.cpp names the repetition penalty ``repeat_penalty``:
both names are sent (each server ignores the other's).
"""

from __future__ import annotations

from typing import Any

from ..proto.tasks import ChatMessage, ChatTask, GenerationTask, SamplingParams, ToolDefinition
from .errors import NotSupported

_COMMON = ("max_tokens", "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty")
_EXTRA_BODY = ("top_k", "min_p", "min_tokens", "ignore_eos", "repetition_penalty")
_ALSO_AS = {"repetition_penalty": "repeat_penalty"}
_COMPLETION_ONLY = ("echo", "suffix", "best_of")


def _sampling(task: SamplingParams) -> dict[str, Any]:
    params: dict[str, Any] = {
        name: getattr(task, name) for name in _COMMON if getattr(task, name) is not None
    }
    if task.logit_bias is not None:
        params["logit_bias"] = dict(task.logit_bias)
    extra = {name: getattr(task, name) for name in _EXTRA_BODY if getattr(task, name) is not None}
    for name, alias in _ALSO_AS.items():
        if name in extra:
            extra[alias] = extra[name]
    if extra:
        params["extra_body"] = extra
    if task.return_context_logits:
        raise NotSupported("OpenAI-compatible servers do not return context logits")
    return params


def _stream_options(params: dict[str, Any], stream: bool) -> dict[str, Any]:
    if stream:
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
    return params


def completion_params(
    task: GenerationTask, model: str, *, stream: bool = True, n: int | None = None
) -> dict[str, Any]:
    """Arguments of ``completions.create``. ``n`` overrides ``task.n`` (a worker that loops
    over samples itself asks for one at a time)."""
    if task.input_str is not None:
        prompt: str | list[int] = task.input_str
    elif task.input_tokens is not None:
        prompt = list(task.input_tokens)
    else:
        raise NotSupported("a generation task needs input_str or input_tokens")
    params = {"model": model, "prompt": prompt, **_sampling(task)}
    count = task.n if n is None else n
    if count is not None and count != 1:
        params["n"] = count
    if task.num_logprobs is not None:
        params["logprobs"] = task.num_logprobs
    for name in _COMPLETION_ONLY:
        if getattr(task, name) is not None:
            params[name] = getattr(task, name)
    return _stream_options(params, stream)


def message_param(message: ChatMessage) -> dict[str, Any]:
    """One message in the OpenAI shape. A missing ``content`` (an assistant turn that only
    calls tools) is sent as ``""``: OpenAI accepts both, llama.cpp's server rejects ``null``."""
    content = message.content if message.content is not None else ""
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_param(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def tool_choice_param(choice: str) -> str | dict[str, Any]:
    """``auto``/``none``/``required`` pass through; any other value names the tool to force."""
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def chat_params(task: ChatTask, model: str, *, stream: bool = True) -> dict[str, Any]:
    """Arguments of ``chat.completions.create``. A chat task returns one message, so ``n`` > 1
    and the completion-only fields are refused rather than silently dropped."""
    if task.n is not None and task.n > 1:
        raise NotSupported("a chat task returns one message: yield n chat tasks instead of n > 1")
    refused = [name for name in _COMPLETION_ONLY if getattr(task, name) not in (None, False, 1)]
    if refused:
        raise NotSupported(f"chat completions have no {', '.join(refused)}")
    params: dict[str, Any] = {
        "model": model,
        "messages": [message_param(m) for m in task.messages],
        **_sampling(task),
    }
    if task.num_logprobs is not None:
        params["logprobs"] = True
        params["top_logprobs"] = task.num_logprobs
    if task.tools:
        params["tools"] = [tool_param(t) for t in task.tools]
    if task.tool_choice is not None:
        params["tool_choice"] = tool_choice_param(task.tool_choice)
    return _stream_options(params, stream)
