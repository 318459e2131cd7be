"""Controller: a method written as a generator that yields tasks.

``process()`` yields a list of tasks (run concurrently; the results are on the same objects
when the yield returns) or a ``ParallelProcess`` of sub-controllers (run concurrently, nestable).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from ..proto.tasks import ChatTask, GenerationTask, Task, ToolCall

Yielded = Any  # list[Task] | ParallelProcess
ControllerGen = Generator[Yielded, None, Any]


@dataclass
class Output:
    """What a controller's ``generate`` returns: the text, and what the method knows about it."""

    text: str
    token_ids: list[int] | None = None
    answer: str | None = None
    finish_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCall] | None = None
    """Tool calls for the caller to run (a chat answer that asks for tools)."""

    @classmethod
    def from_task(cls, task: Task) -> Output:
        message = task.output_message if isinstance(task, ChatTask) else None
        return cls(
            text=getattr(task, "output_str", None) or "",
            token_ids=getattr(task, "output_tokens", None),
            finish_reason=getattr(task, "finish_reason", None),
            tool_calls=message.tool_calls if message is not None and message.tool_calls else None,
        )


class Controller:
    """Base class of every method. Subclasses implement ``process``."""

    class WorkerTag(str, Enum):
        GENERATION = "generation"

    name: str | None = None
    """Label for usage accounting; defaults to the class name."""

    accepts_messages: ClassVar[bool] = False
    """True for chat-aware methods: the controller service passes a job's chat messages to
    ``generate`` unrendered, instead of one prompt in the model's chat format."""

    collection_factories: ClassVar[dict[str, Callable[[], Any]]] = {}
    """Set by ``with_task_collection``: observers every instance and clone gets fresh."""

    def __init__(self) -> None:
        self.task_collections: dict[str, Any] = {}
        self._fresh_collections()

    def _fresh_collections(self) -> None:
        self.task_collections = {name: make() for name, make in self.collection_factories.items()}

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    def clone(self) -> Controller:
        """A fresh copy for one request or one branch; state is never shared between them."""
        twin = copy.deepcopy(self)
        twin._fresh_collections()
        return twin

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        task = GenerationTask.from_prompt(prompt)
        yield from self.process([task], **kwargs)
        task.raise_for_status()
        return Output.from_task(task)

    def best_so_far(self) -> Output | None:
        """The best answer so far, asked for when a budget runs out; ``None``: nothing yet."""
        return None

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        raise NotImplementedError(f"{type(self).__name__}.process")
        yield  # pragma: no cover


class ParallelProcess:
    """Run ``controllers[i].process(tasks_lists[i], **kwargs_lists[i])`` concurrently."""

    def __init__(
        self,
        controllers: Sequence[Controller],
        tasks_lists: Sequence[list[Task]],
        kwargs_lists: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        if len(controllers) != len(tasks_lists):
            raise ValueError("ParallelProcess needs one task list per controller")
        if kwargs_lists is not None and len(kwargs_lists) != len(controllers):
            raise ValueError("ParallelProcess needs one kwargs dict per controller")
        self.controllers = list(controllers)
        self.tasks_lists = list(tasks_lists)
        self.kwargs_lists = list(kwargs_lists) if kwargs_lists is not None else [{} for _ in controllers]

    def __len__(self) -> int:
        return len(self.controllers)
