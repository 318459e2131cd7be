"""Scaffolding over NATS: inference-time-compute methods as generator controllers whose tasks
run on workers in-process or across a NATS bus."""

from .errors import ScaffoldingError
from .proto import (
    ChatMessage,
    ChatTask,
    GenerationTask,
    RewardTask,
    StreamingChatTask,
    StreamingGenerationTask,
    StreamingTask,
    Task,
    TaskStatus,
    ToolCallTask,
)
from .runtime import (
    Controller,
    Output,
    ParallelProcess,
    ScaffoldingLlm,
    ScaffoldingResult,
    Worker,
    handles,
    streams,
    with_task_collection,
)

__version__ = "0.1.0"

__all__ = [
    "ChatMessage",
    "ChatTask",
    "Controller",
    "GenerationTask",
    "Output",
    "ParallelProcess",
    "RewardTask",
    "ScaffoldingError",
    "ScaffoldingLlm",
    "ScaffoldingResult",
    "StreamingChatTask",
    "StreamingGenerationTask",
    "StreamingTask",
    "Task",
    "TaskStatus",
    "ToolCallTask",
    "Worker",
    "handles",
    "streams",
    "with_task_collection",
]
