"""The wire contract: every message that crosses the bus, its encoding and its subjects.

Language-neutral JSON Schemas generated from these models live in the repository's
``proto/schema/``; ``proto/PROTOCOL.md`` explains subjects, frames and errors in prose.
"""

from .codec import decode, encode, pack, task_from_request, unpack_map, validate
from .errors import ErrorCode, ErrorInfo
from .messages import (
    Budget,
    FrameType,
    Job,
    JobEvent,
    JobEventType,
    JobRecord,
    JobResult,
    JobState,
    TaskReply,
    TaskRequest,
)
from .subjects import Subjects
from .tasks import (
    TASK_TYPES,
    ChatMessage,
    ChatTask,
    GenerationChoice,
    GenerationTask,
    RewardTask,
    SamplingParams,
    StreamingChatTask,
    StreamingGenerationTask,
    StreamingTask,
    Task,
    TaskStatus,
    TokenLogprob,
    ToolCall,
    ToolCallTask,
    ToolDefinition,
    TopLogprob,
    Usage,
)
from .version import DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_TASK_BYTES, PROTOCOL_VERSION

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_TASK_BYTES",
    "PROTOCOL_VERSION",
    "TASK_TYPES",
    "Budget",
    "ChatMessage",
    "ChatTask",
    "ErrorCode",
    "ErrorInfo",
    "FrameType",
    "GenerationChoice",
    "GenerationTask",
    "Job",
    "JobEvent",
    "JobEventType",
    "JobRecord",
    "JobResult",
    "JobState",
    "RewardTask",
    "SamplingParams",
    "StreamingChatTask",
    "StreamingGenerationTask",
    "StreamingTask",
    "Subjects",
    "Task",
    "TaskReply",
    "TaskRequest",
    "TaskStatus",
    "TokenLogprob",
    "ToolCall",
    "ToolCallTask",
    "ToolDefinition",
    "TopLogprob",
    "Usage",
    "decode",
    "encode",
    "pack",
    "task_from_request",
    "unpack_map",
    "validate",
]
