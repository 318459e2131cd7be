"""The plain generation and chat controllers: one task to the backend, results on the
caller's tasks. Every other method uses them as the leaves of its tree."""

from __future__ import annotations

from typing import Any, Literal

from ..proto.errors import ErrorCode
from ..proto.tasks import (
    ChatMessage,
    ChatTask,
    GenerationTask,
    StreamingChatTask,
    StreamingGenerationTask,
    StreamingTask,
    Task,
    ToolDefinition,
)
from ..runtime.context import current_request, emit_partial
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.base import SAMPLING_FIELDS, fill_unset, prompt_of, require, validate_sampling


class NativeGenerationController(Controller):
    """Runs generation tasks as given. Sampling kwargs (all ``None`` by default) fill only what
    a task leaves unset, so a caller or an enclosing method can always override them.
    With ``stream=True`` each task runs as a streamed generation and, when it is the only one,
    its text deltas go to the client through ``emit_partial``."""

    name = "generation"
    kind = "native"

    def __init__(
        self,
        *,
        stream: bool = False,
        streaming_step: int = 8,
        worker_tag: str | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        super().__init__()
        require(streaming_step >= 1, "streaming_step", "must be at least 1")
        self.stream = stream
        self.streaming_step = streaming_step
        self.worker_tag = worker_tag
        self.sampling = validate_sampling(sampling)
        if name is not None:
            self.name = name

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        task = GenerationTask(input_str=prompt, **validate_sampling(kwargs))
        yield from self.process([task])
        task.raise_for_status()
        return Output.from_task(task)

    def _prepare(self, task: Task) -> None:
        fill_unset(task, self.sampling)
        if self.worker_tag is not None:
            task.worker_tag = self.worker_tag

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        for task in tasks:
            self._prepare(task)
        if not self.stream:
            yield from follow(tasks)
            return
        yield from self._stream(tasks)

    def _stream(self, tasks: list[Task]) -> ControllerGen:
        streamed: list[tuple[Task, StreamingGenerationTask]] = []
        plain: list[Task] = []
        for task in tasks:
            if isinstance(task, StreamingGenerationTask):
                task.streaming_step = self.streaming_step
                streamed.append((task, task))
            elif isinstance(task, GenerationTask):
                fields = task.inputs()
                fields.pop("id", None)
                streamed.append((task, StreamingGenerationTask(**fields, streaming_step=self.streaming_step)))
            else:
                plain.append(task)
        if plain:
            yield plain
        streams: list[Task] = [s for _, s in streamed]
        yield from follow(streams, partials=streams[0] if len(streams) == 1 else None)
        for caller, stream in streamed:
            if caller is not stream:
                caller.copy_results_from(stream)


class NativeChatController(Controller):
    """Runs chat tasks; results (assistant message, text, usage) land on the caller's tasks,
    which upstream forgot to do.

    ``stream``: ``None`` (default) streams the job's own chat turn (``generate``) when the job
    asks for partial text (``Job.stream``), so a client sees token deltas; ``True`` streams
    every turn it runs, ``False`` none. Sub-turns of other methods (``process``) are streamed
    only with ``True``: their text is not the job's answer. A streamed turn still returns the
    model's tool calls (in its final result); a worker that does not know the
    ``streaming_chat`` kind (``unknown_task_type``) gets the turn again as a plain chat."""

    accepts_messages = True  # the controller service passes chat messages through unrendered
    kind = "chat"

    name = "chat"

    def __init__(
        self,
        *,
        tools: list[ToolDefinition] | None = None,
        tool_choice: Literal["none", "auto", "required"] | None = None,
        stream: bool | None = None,
        streaming_step: int = 8,
        worker_tag: str | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        """``tools``: offered to the model; its tool calls are returned to the caller to run
        (OpenAI semantics; ``tool_agent`` runs them on the bus instead)."""
        super().__init__()
        require(streaming_step >= 1, "streaming_step", "must be at least 1")
        self.tools = tools
        self.tool_choice = tool_choice
        self.stream = stream
        self.streaming_step = streaming_step
        self.worker_tag = worker_tag
        self.sampling = validate_sampling(sampling)
        if name is not None:
            self.name = name

    def generate(self, prompt: Any, **kwargs: Any) -> ControllerGen:
        fields: dict[str, Any] = {
            "messages": as_messages(prompt),
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            **validate_sampling(kwargs),
        }
        ctx = current_request()
        wanted = self.stream if self.stream is not None else bool(ctx is not None and ctx.stream)
        task = StreamingChatTask(**fields, streaming_step=self.streaming_step) if wanted else ChatTask(**fields)
        yield from self.process([task])
        task.raise_for_status()
        return Output.from_task(task)

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        chats = [self._chat_for(task) for task in tasks]
        single = chats[0] if len(chats) == 1 and isinstance(chats[0], StreamingTask) else None
        yield from follow(list(chats), partials=single)
        unknown = [c for c in chats if isinstance(c, StreamingChatTask) and _unknown_kind(c)]
        if unknown:  # a worker of an older or another implementation: the turn once more, plain
            plain = {c.id: _plain_chat(c) for c in unknown}
            yield list(plain.values())
            for turn in unknown:
                turn.copy_results_from(plain[turn.id])
            if single is not None and single.ok and any(t is single for t in unknown):
                emit_partial(getattr(single, "output_str", None) or "")
        for task, chat in zip(tasks, chats, strict=False):
            if task is not chat:
                task.copy_results_from(chat)
                if isinstance(task, GenerationTask) and task.output_str is None and chat.output_message:
                    task.output_str = chat.output_message.content

    def _chat_for(self, task: Task) -> ChatTask:
        """The chat task that runs for ``task``: itself when it is one (results land on the
        caller's own task), streamed when ``stream`` is ``True``."""
        chat: ChatTask
        if isinstance(task, ChatTask) and (self.stream is not True or isinstance(task, StreamingChatTask)):
            chat = task
        elif isinstance(task, ChatTask):
            fields = task.inputs()
            fields.pop("id", None)
            chat = StreamingChatTask(**fields, streaming_step=self.streaming_step)
        else:
            cls = StreamingChatTask if self.stream else ChatTask
            chat = cls(messages=as_messages(prompt_of(task)))
            fill_unset(chat, {k: getattr(task, k, None) for k in SAMPLING_FIELDS})
        if isinstance(chat, StreamingChatTask):
            chat.streaming_step = self.streaming_step
        fill_unset(chat, self.sampling)
        if self.worker_tag is not None:
            chat.worker_tag = self.worker_tag
        return chat


def follow(tasks: list[Task], *, partials: Task | None = None) -> ControllerGen:
    """Yield ``tasks``, then re-yield the streamed ones (each yield returns after one chunk)
    until every one has ended. ``partials``: the one task whose new text goes to the client
    as it comes (``emit_partial``), when the method's answer is that task's text."""
    seen = ""
    pending = list(tasks)
    while pending:
        yield pending
        if partials is not None:
            text = getattr(partials, "output_str", None) or ""
            emit_partial(text[len(seen) :])
            seen = text
        pending = [t for t in tasks if isinstance(t, StreamingTask) and not t.end_flag]


def _unknown_kind(task: Task) -> bool:
    return task.error is not None and task.error.code is ErrorCode.UNKNOWN_TASK_TYPE


def _plain_chat(task: StreamingChatTask) -> ChatTask:
    fields = {k: v for k, v in task.inputs().items() if k not in ("id", "streaming_step", "cancel_flag")}
    return ChatTask(**fields)


def as_messages(prompt: Any) -> list[ChatMessage]:
    """A prompt as chat messages: a string is one user turn; dicts and messages pass through."""
    if isinstance(prompt, str):
        return [ChatMessage(role="user", content=prompt)]
    return [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in prompt]
