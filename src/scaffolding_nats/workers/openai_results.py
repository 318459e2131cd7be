"""Streamed OpenAI chunks → task results.

Workers always stream, even for a one-shot task, because only a stream shows when the first
token arrived (``ttft_s``). Servers that send no usage chunk (llama.cpp) are counted from the
chunks themselves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..proto.tasks import ChatMessage, GenerationChoice, TokenLogprob, ToolCall, TopLogprob, Usage


def _top(items: list[tuple[str, float]]) -> list[TopLogprob]:
    return [TopLogprob(token=t, logprob=lp) for t, lp in sorted(items, key=lambda x: -x[1])]


def completion_logprobs(raw: Any) -> list[TokenLogprob]:
    """The completions API's parallel lists; echoed prompt tokens without a logprob are skipped.

    llama.cpp's ``llama-server`` answers a completion in the chat API's shape instead (a
    ``content`` list of per-token objects), which the SDK keeps as an untyped extra field.
    """
    if raw is None:
        return []
    content = getattr(raw, "content", None)
    if content and not raw.tokens:
        return [_chat_style(item) for item in content]
    if not raw.tokens:
        return []
    values = raw.token_logprobs or []
    tops = raw.top_logprobs or []
    out = []
    for i, token in enumerate(raw.tokens):
        value = values[i] if i < len(values) else None
        if value is None:
            continue
        alt = tops[i] if i < len(tops) else None
        out.append(TokenLogprob(token=token, logprob=value, top=_top(list(alt.items())) if alt else None))
    return out


def _field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def _chat_style(item: Any) -> TokenLogprob:
    """One token of the chat API's shape, as an SDK object or (an untyped extra) a dict."""
    pairs = [(_field(t, "token"), _field(t, "logprob")) for t in _field(item, "top_logprobs") or []]
    top = _top(pairs) if pairs else None
    return TokenLogprob(token=_field(item, "token"), logprob=_field(item, "logprob"), top=top)


def chat_logprobs(raw: Any) -> list[TokenLogprob]:
    if raw is None or not raw.content:
        return []
    return [_chat_style(item) for item in raw.content]


@dataclass
class ChoiceAccumulator:
    """One output sequence being assembled from deltas."""

    parts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    wants_logprobs: bool = False
    finish_reason: str | None = None
    tokens: int = 0
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add_completion(self, choice: Any) -> int:
        """Returns the number of new tokens in this delta."""
        lps = completion_logprobs(choice.logprobs)
        return self._add(choice.text or "", lps, choice.finish_reason, choice.logprobs is not None)

    def add_chat(self, choice: Any) -> int:
        delta = choice.delta
        tool_delta = bool(delta is not None and delta.tool_calls)
        if tool_delta:
            for call in delta.tool_calls:
                slot = self.tool_calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
        text = (delta.content or "") if delta is not None else ""
        lps = chat_logprobs(choice.logprobs)
        new = self._add(text, lps, choice.finish_reason, choice.logprobs is not None)
        return new or int(tool_delta)

    def _add(self, text: str, lps: list[TokenLogprob], finish: str | None, has_lp: bool) -> int:
        if text:
            self.parts.append(text)
        self.logprobs.extend(lps)
        self.wants_logprobs |= has_lp
        if finish is not None:
            self.finish_reason = finish
        # llama.cpp sends one token per chunk; logprob lists are exact where present.
        new = len(lps) if lps else int(bool(text))
        self.tokens += new
        return new

    def tool_call_list(self) -> list[ToolCall] | None:
        if not self.tool_calls:
            return None
        return [
            ToolCall(id=slot["id"] or f"call_{i}", name=slot["name"], arguments=slot["arguments"] or "{}")
            for i, slot in sorted(self.tool_calls.items())
        ]

    def choice(self) -> GenerationChoice:
        return GenerationChoice(
            text=self.text,
            finish_reason=self.finish_reason,
            logprobs=self.logprobs if self.wants_logprobs else None,
        )

    def message(self) -> ChatMessage:
        text = self.text
        calls = self.tool_call_list()
        return ChatMessage(role="assistant", content=text if text or not calls else None, tool_calls=calls)


def cached_tokens(body: Any) -> int:
    """Prompt tokens the engine reused from its cache: OpenAI's (and llama-server's)
    ``usage.prompt_tokens_details.cached_tokens``, else llama-server's ``timings.cache_n``."""
    details = getattr(getattr(body, "usage", None), "prompt_tokens_details", None)
    cached = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    if isinstance(cached, int) and cached >= 0:
        return cached
    extra = getattr(body, "model_extra", None) or {}
    timings = extra.get("timings") if isinstance(extra, dict) else None
    n = timings.get("cache_n") if isinstance(timings, dict) else None
    return n if isinstance(n, int) and n >= 0 else 0


@dataclass
class StreamAccumulator:
    """A whole streamed response: its choices, its usage and its timing."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    ended: float | None = None
    choices: dict[int, ChoiceAccumulator] = field(default_factory=dict)
    usage: Usage | None = None

    def choice(self, index: int = 0) -> ChoiceAccumulator:
        return self.choices.setdefault(index, ChoiceAccumulator())

    def feed_completion(self, chunk: Any) -> int:
        new = sum(self.choice(c.index).add_completion(c) for c in chunk.choices or ())
        return self._after(chunk, new)

    def feed_chat(self, chunk: Any) -> int:
        new = sum(self.choice(c.index).add_chat(c) for c in chunk.choices or ())
        return self._after(chunk, new)

    def feed_response(self, response: Any) -> None:
        """A whole (not streamed) completion or chat response."""
        for c in response.choices or ():
            acc = self.choice(c.index)
            message = getattr(c, "message", None)
            if message is None:
                acc.add_completion(c)
                continue
            for i, call in enumerate(message.tool_calls or ()):
                acc.tool_calls[i] = {
                    "id": call.id or "",
                    "name": call.function.name or "",
                    "arguments": call.function.arguments or "",
                }
            acc._add(message.content or "", chat_logprobs(c.logprobs), c.finish_reason, c.logprobs is not None)
        self._after(response, 0)

    def _after(self, chunk: Any, new: int) -> int:
        if new and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if getattr(chunk, "usage", None) is not None:
            self.usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens or 0,
                completion_tokens=chunk.usage.completion_tokens or 0,
                cached_tokens=cached_tokens(chunk),
            )
        return new

    def finish(self) -> None:
        self.ended = time.perf_counter()

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def latency_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def usage_estimated(self) -> bool:
        return self.usage is None

    def final_usage(self, prompt_chars: int) -> Usage:
        """The server's count when it sent one; else streamed tokens and ~4 characters a
        prompt token."""
        if self.usage is not None:
            return self.usage
        return Usage(
            prompt_tokens=math.ceil(prompt_chars / 4),
            completion_tokens=sum(c.tokens for c in self.choices.values()),
        )
