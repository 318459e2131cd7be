"""Scripted deterministic workers for in-process method tests: outputs are a pure function
of the task (prompt, seed), every task is recorded, and streamed generations record whether
they ran to the end or had their generator closed (cancelled)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from scaffolding_nats.errors import ScaffoldingError
from scaffolding_nats.proto import (
    Budget,
    ChatMessage,
    ChatTask,
    GenerationTask,
    RewardTask,
    StreamingChatTask,
    StreamingGenerationTask,
    Task,
    TokenLogprob,
    ToolCallTask,
    TopLogprob,
    Usage,
)
from scaffolding_nats.runtime import Controller, Outcome, TaskRunner, Worker, handles, run_request, streams


@dataclass
class Script:
    """What a scripted generation returns: text, and per-token confidence for logprobs."""

    text: str
    conf: float | list[float] = 5.0
    finish_reason: str = "stop"


GenScript = Callable[[GenerationTask], "str | Script | Exception"]
RewardScript = Callable[[RewardTask], "list[float] | list[list[float]] | Exception"]
ChatScript = Callable[[ChatTask], "ChatMessage | str | Exception"]
ToolScript = Callable[[ToolCallTask], "str | Exception"]


def tokens(text: str) -> list[str]:
    """Whitespace-attached words; joining them gives the text back."""
    return re.findall(r"\s*\S+|\s+", text)


def _logprob(tok: str, conf: float) -> TokenLogprob:
    # Two alternatives whose mean log-probability is -conf: token confidence == conf.
    return TokenLogprob(
        token=tok,
        logprob=-0.01,
        top=[TopLogprob(token=tok, logprob=-0.01), TopLogprob(token="~", logprob=0.01 - 2 * conf)],
    )


class ScriptedWorker(Worker):
    def __init__(
        self,
        gen: GenScript | None = None,
        *,
        reward: RewardScript | None = None,
        chat: ChatScript | None = None,
        tool: ToolScript | None = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.gen_script = gen or (lambda t: "ok")
        self.reward_script = reward
        self.chat_script = chat
        self.tool_script = tool
        self.delay = delay
        self.seen: list[Task] = []
        self.opened: list[str] = []
        self.finished: list[str] = []
        self.closed: list[str] = []

    # -- helpers ---------------------------------------------------------------------------

    def of(self, kind: type[Task]) -> list[Any]:
        return [t for t in self.seen if type(t) is kind]

    def _script(self, task: GenerationTask) -> Script:
        out = self.gen_script(task)
        if isinstance(out, Exception):
            raise out
        return out if isinstance(out, Script) else Script(out)

    @staticmethod
    def _conf(script: Script, i: int) -> float:
        return script.conf[min(i, len(script.conf) - 1)] if isinstance(script.conf, list) else script.conf

    # -- handlers --------------------------------------------------------------------------

    @handles(GenerationTask)
    async def generate(self, task: GenerationTask) -> None:
        self.seen.append(task.model_copy(deep=True))
        await asyncio.sleep(self.delay)
        script = self._script(task)
        toks = tokens(script.text)
        finish = script.finish_reason
        if task.max_tokens is not None and len(toks) > task.max_tokens:
            toks, finish = toks[: task.max_tokens], "length"
        task.output_str = "".join(toks)
        task.finish_reason = finish
        task.usage = Usage(prompt_tokens=len(tokens(task.input_str or "")), completion_tokens=len(toks))
        if task.num_logprobs:
            task.logprobs = [_logprob(t, self._conf(script, i)) for i, t in enumerate(toks)]

    @streams(StreamingGenerationTask)
    async def stream(self, task: StreamingGenerationTask) -> AsyncIterator[int]:
        self.seen.append(task.model_copy(deep=True))
        self.opened.append(task.id)
        done = False
        try:
            script = self._script(task)
            toks = tokens(script.text)
            if task.max_tokens is not None:
                toks = toks[: task.max_tokens]
            prompt_tokens = len(tokens(task.input_str or ""))
            for i, tok in enumerate(toks):
                await asyncio.sleep(0)
                task.output_str = (task.output_str or "") + tok
                task.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=i + 1)
                if task.num_logprobs:
                    task.logprobs = [*(task.logprobs or []), _logprob(tok, self._conf(script, i))]
                yield 1
            task.finish_reason = script.finish_reason
            done = True
            self.finished.append(task.id)
        finally:
            if not done:
                self.closed.append(task.id)

    @handles(RewardTask)
    async def reward(self, task: RewardTask) -> None:
        self.seen.append(task.model_copy(deep=True))
        if self.reward_script is None:
            raise ScaffoldingError("no reward script")
        out = self.reward_script(task)
        if isinstance(out, Exception):
            raise out
        if task.mode == "process":
            task.step_scores = out  # type: ignore[assignment]
        else:
            task.scores = out  # type: ignore[assignment]

    def _chat_reply(self, task: ChatTask) -> tuple[ChatMessage, str]:
        if self.chat_script is None:
            raise ScaffoldingError("no chat script")
        out = self.chat_script(task)
        if isinstance(out, Exception):
            raise out
        msg = out if isinstance(out, ChatMessage) else ChatMessage(role="assistant", content=out)
        finish = "tool_calls" if msg.tool_calls else "stop"
        toks = tokens(msg.content or "")
        if task.max_tokens is not None and len(toks) > task.max_tokens:  # a backend honours max_tokens
            msg = ChatMessage(role="assistant", content="".join(toks[: task.max_tokens]))
            finish = "length"
        return msg, finish

    @handles(ChatTask)
    async def chat(self, task: ChatTask) -> None:
        self.seen.append(task.model_copy(deep=True))
        msg, finish = self._chat_reply(task)
        task.output_message = msg
        task.output_str = msg.content
        task.finish_reason = finish
        task.usage = Usage(prompt_tokens=len(task.messages), completion_tokens=len(tokens(msg.content or "")))

    @streams(StreamingChatTask)
    async def chat_stream(self, task: StreamingChatTask) -> AsyncIterator[int]:
        """The reply token by token; tool calls only once it is done, as a backend sends them."""
        self.seen.append(task.model_copy(deep=True))
        msg, finish = self._chat_reply(task)
        toks = tokens(msg.content or "")
        for i, tok in enumerate(toks):
            await asyncio.sleep(0)
            task.output_str = (task.output_str or "") + tok
            task.output_message = ChatMessage(role="assistant", content=task.output_str)
            task.usage = Usage(prompt_tokens=len(task.messages), completion_tokens=i + 1)
            yield 1
        task.output_message = msg
        task.output_str = msg.content
        task.finish_reason = finish

    @handles(ToolCallTask)
    async def tool(self, task: ToolCallTask) -> None:
        self.seen.append(task.model_copy(deep=True))
        if self.tool_script is None:
            raise ScaffoldingError("no tool script")
        await asyncio.sleep(self.delay)
        out = self.tool_script(task)
        if isinstance(out, Exception):
            raise out
        task.result = out


def seed_of(task: GenerationTask) -> int:
    return task.seed if task.seed is not None else -1


async def run(
    controller: Controller,
    worker: ScriptedWorker,
    prompt: Any = "Q: ",
    *,
    budget: Budget | None = None,
    tags: tuple[str, ...] = ("generation", "reward", "tool_call"),
    events: list[tuple[str, dict[str, Any]]] | None = None,
    clone: bool = True,
    stream: bool = False,
    **kwargs: Any,
) -> Outcome:
    """Run one request in-process, the way ScaffoldingLlm does (a fresh clone)."""
    runner = TaskRunner({tag: worker for tag in tags})
    sink = (lambda kind, payload: events.append((kind, payload))) if events is not None else None
    return await run_request(
        controller.clone() if clone else controller,
        runner,
        prompt=prompt,
        kwargs=kwargs,
        budget=budget,
        on_event=sink,
        stream=stream,
    )
