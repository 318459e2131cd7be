"""The plain generation and chat controllers: one task to the backend, results on the
caller's tasks. Every other method uses them as the leaves of its tree."""

from __future__ import annotations

from typing import Any, Literal

from ..proto.tasks import ChatMessage, ChatTask, GenerationTask, StreamingGenerationTask, Task, ToolDefinition
from ..runtime.context import emit_partial
from ..runtime.controller import Controller, ControllerGen, Output
from ._common import SAMPLING_FIELDS, fill_unset, prompt_of, require, validate_sampling


class NativeGenerationController(Controller):
    """Runs generation tasks as given. Sampling kwargs (all ``None`` by default) fill only what
    a task leaves unset, so a caller or an enclosing method can always override them.
    With ``stream=True`` each task runs as a streamed generation and, when it is the only one,
    its text deltas go to the client through ``emit_partial``."""

    name = "generation"

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
            yield list(tasks)
            # A streamed task returns after one chunk: re-yield until it ends.
            while pending := [t for t in tasks if isinstance(t, StreamingGenerationTask) and not t.end_flag]:
                yield pending
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
        partials = len(streamed) == 1
        seen = ""
        while pending := [s for _, s in streamed if not s.end_flag]:
            yield pending
            if partials:
                text = streamed[0][1].output_str or ""
                emit_partial(text[len(seen) :])
                seen = text
        for caller, stream in streamed:
            if caller is not stream:
                caller.copy_results_from(stream)


class NativeChatController(Controller):
    """Runs chat tasks; results (assistant message, text, usage) land on the caller's tasks,
    which upstream forgot to do."""

    accepts_messages = True  # the controller service passes chat messages through unrendered

    name = "chat"

    def __init__(
        self,
        *,
        tools: list[ToolDefinition] | None = None,
        tool_choice: Literal["none", "auto", "required"] | None = None,
        worker_tag: str | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        """``tools``: offered to the model; its tool calls are returned to the caller to run
        (OpenAI semantics; ``tool_agent`` runs them on the bus instead)."""
        super().__init__()
        self.tools = tools
        self.tool_choice = tool_choice
        self.worker_tag = worker_tag
        self.sampling = validate_sampling(sampling)
        if name is not None:
            self.name = name

    def generate(self, prompt: Any, **kwargs: Any) -> ControllerGen:
        task = ChatTask(
            messages=as_messages(prompt), tools=self.tools, tool_choice=self.tool_choice, **validate_sampling(kwargs)
        )
        yield from self.process([task])
        task.raise_for_status()
        return Output.from_task(task)

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        chats: list[ChatTask] = []
        for task in tasks:
            if isinstance(task, ChatTask):
                chat = task  # results land on the caller's own task
            else:
                chat = ChatTask(messages=as_messages(prompt_of(task)))
                fill_unset(chat, {k: getattr(task, k, None) for k in SAMPLING_FIELDS})
            fill_unset(chat, self.sampling)
            if self.worker_tag is not None:
                chat.worker_tag = self.worker_tag
            chats.append(chat)
        yield chats
        for task, chat in zip(tasks, chats, strict=False):
            if task is not chat:
                task.copy_results_from(chat)
                if isinstance(task, GenerationTask) and task.output_str is None and chat.output_message:
                    task.output_str = chat.output_message.content


def as_messages(prompt: Any) -> list[ChatMessage]:
    """A prompt as chat messages: a string is one user turn; dicts and messages pass through."""
    if isinstance(prompt, str):
        return [ChatMessage(role="user", content=prompt)]
    return [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in prompt]
