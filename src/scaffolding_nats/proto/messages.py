"""Envelopes that cross the bus: task requests and replies, jobs and job events."""

from __future__ import annotations

import hashlib
import json
import time
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ErrorInfo
from .tasks import ChatMessage, SamplingParams, TaskStatus, ToolCall, Usage, new_id
from .version import PROTOCOL_VERSION


def _version_required(schema: dict[str, Any]) -> None:
    """Receivers reject a message without ``v``; senders in Python get it filled in."""
    schema.setdefault("required", [])
    if "v" not in schema["required"]:
        schema["required"].insert(0, "v")


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_version_required)

    v: int = PROTOCOL_VERSION


# -- tasks -----------------------------------------------------------------------------------


class TaskRequest(_Message):
    """A task sent to ``<prefix>.tasks.<worker_tag>``; ``task`` holds the task's input fields."""

    kind: str
    task: dict[str, Any]
    timeout_ms: int | None = Field(default=None, ge=1)
    heartbeat_ms: int | None = Field(default=None, ge=50)


class FrameType(str, Enum):
    PARTIAL = "partial"  # streaming tasks: results so far; more frames follow
    HEARTBEAT = "heartbeat"  # the worker is alive and still working
    FINAL = "final"  # the last frame of a reply; carries the status


class TaskReply(_Message):
    """One frame of a task's reply. Exactly one ``final`` frame ends every reply."""

    task_id: str
    frame: FrameType = Field(default=FrameType.FINAL, strict=False)  # enums: their wire values
    seq: int = 0
    status: TaskStatus | None = Field(default=None, strict=False)
    result: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    attempt: int | None = Field(default=None, ge=1)  # a queued task's delivery count (JetStream)


# -- jobs ------------------------------------------------------------------------------------


class Budget(BaseModel):
    """Caps for one job, enforced across every task of every branch."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: int | None = Field(default=None, ge=1)
    max_tasks: int | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)


class Job(_Message):
    """A request to run a method, published to ``<prefix>.jobs.<method>``.

    ``sampling`` (and ``model``) fill every generation the method runs wherever the method
    itself left a field unset: that is how an OpenAI request's temperature reaches a vote's
    samplers without the client knowing the method's structure."""

    id: str = Field(default_factory=new_id, pattern=r"^[A-Za-z0-9_\-]{1,128}$")  # a subject token
    method: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    params: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    model: str | None = None
    sampling: SamplingParams | None = None
    budget: Budget | None = None
    stream: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict)
    submitted_at: float = Field(default_factory=time.time)


def job_digest(job: Job) -> str:
    """A fingerprint of what a job asks for (every field but ``v``, ``id`` and ``submitted_at``),
    so a second submission under a job's id can be told to be the same job or another one."""
    body = job.model_dump(mode="json", exclude={"v", "id", "submitted_at"}, exclude_none=True)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class JobEventType(str, Enum):
    ACCEPTED = "accepted"
    PARTIAL = "partial"
    PROGRESS = "progress"
    RESULT = "result"
    ERROR = "error"


StopReason = Literal["completed", "budget_tokens", "budget_tasks", "budget_time"]
"""Why a job that succeeded ended. A cancelled job does not succeed: it ends in an ``error``
event with code ``cancelled``."""


class JobResult(BaseModel):
    """What a finished job returns. ``stop_reason`` says why it ended (e.g. a budget)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str
    answer: str | None = None
    finish_reason: str | None = None
    stop_reason: StopReason = "completed"
    tool_calls: list[ToolCall] | None = None
    """Tool calls the model asked the client to run (a chat job given client ``tools``)."""
    usage: Usage = Field(default_factory=Usage)
    usage_by_controller: dict[str, Usage] = Field(default_factory=dict)
    num_tasks: int = 0
    elapsed_s: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)


class JobEvent(_Message):
    """One event of a job on ``<prefix>.events.<job_id>``; ``seq`` counts from 0 without gaps."""

    job_id: str
    seq: int
    type: JobEventType = Field(strict=False)
    ts: float = Field(default_factory=time.time)
    text: str | None = None
    progress: dict[str, Any] | None = None
    result: JobResult | None = None
    error: ErrorInfo | None = None


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobRecord(_Message):
    """A job's state as kept for retrieval after it ends (the job-state bucket), under the key
    ``job_key(job_id, owner)``."""

    job_id: str
    method: str
    state: JobState = Field(strict=False)
    owner: str | None = None  # the job's owner token (client role or gateway tenant), if any
    digest: str | None = None  # ``job_digest`` of the job: a re-post under its id is the same job or a conflict
    updated_at: float = Field(default_factory=time.time)
    result: JobResult | None = None
    error: ErrorInfo | None = None
