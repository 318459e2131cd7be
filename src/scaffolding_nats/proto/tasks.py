"""Task types: the unit of work a controller yields and a worker executes.

A task object is both the runtime object a controller holds and the wire model: its input
fields travel in a ``TaskRequest``; its result fields come back in a ``TaskReply`` and are
merged into the same object.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from .errors import ErrorInfo, TaskFailed, TaskStatus

AFFINITY_KEY_MAX = 256
"""Longest ``Task.affinity_key`` accepted (characters)."""


def new_id() -> str:
    """128 random bits as hex: unique like a UUID4, at a third of the cost."""
    return os.urandom(16).hex()


class Usage(BaseModel):
    """Token counts of one task, or summed over many."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Of ``prompt_tokens``, those the engine served from its prefix cache rather than computed
    (OpenAI's ``usage.prompt_tokens_details.cached_tokens``; 0 when the engine does not say)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


class TopLogprob(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """Log-probability of one generated token, with the most likely alternatives."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str
    logprob: float
    token_id: int | None = None
    top: list[TopLogprob] | None = None


class Task(BaseModel):
    """Fields every task has. Subclasses name their result fields in ``RESULT_FIELDS``."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid", strict=True)

    kind: ClassVar[str] = "task"
    DEFAULT_TAG: ClassVar[str] = "generation"
    RESULT_FIELDS: ClassVar[frozenset[str]] = frozenset()

    id: str = Field(default_factory=new_id)
    worker_tag: str = "generation"
    metadata: dict[str, Any] = Field(default_factory=dict)
    affinity_key: str | None = Field(default=None, min_length=1, max_length=AFFINITY_KEY_MAX)
    """A routing hint: tasks with the same key share a prompt prefix, so a worker with several
    engine replicas (or engine slots) sends them where that prefix is cached while it has room.
    The runtime sets it on every task a controller yields (see ``runtime.affinity``); ``None``:
    any engine. A hint only: it never changes what a task computes."""
    # Outcome of the last run: not task fields on the wire (replies carry them separately).
    status: TaskStatus = Field(default=TaskStatus.PENDING, exclude=True, strict=False)
    error: ErrorInfo | None = Field(default=None, exclude=True)
    start_timeout: float | None = Field(default=None, exclude=True, gt=0)
    """For the caller, never sent: seconds a queued task may wait for a worker to take it
    before it fails with ``no_worker`` (a method that can do without it, e.g. best-of-N's
    scoring). None: it waits for the whole task deadline (workers may be scaling up)."""

    def set_outcome(self, status: TaskStatus, error: ErrorInfo | None = None) -> None:
        """Set status and error without re-validating values the runtime built itself (this
        runs for every task; user assignments to ``status`` are still validated)."""
        self.__dict__["status"] = status
        self.__dict__["error"] = error

    def fill(self, **results: Any) -> None:
        """Set result fields to values the caller built itself, without validating each one
        again (as ``set_outcome``); results read from the bus go through ``merge_results``."""
        unknown = results.keys() - self.RESULT_FIELDS
        if unknown:
            raise AttributeError(f"{type(self).__name__} has no result fields {sorted(unknown)}")
        self.__dict__.update(results)
        self.__pydantic_fields_set__.update(results)

    @property
    def ok(self) -> bool:
        return self.status is TaskStatus.SUCCESS

    def inputs(self) -> dict[str, Any]:
        """The fields that travel to a worker: everything but results and status."""
        return self.model_dump(mode="json", exclude=set(self.RESULT_FIELDS), exclude_none=True)

    def results(self) -> dict[str, Any]:
        """The fields a worker fills, as they travel back."""
        return self.model_dump(mode="json", include=set(self.RESULT_FIELDS), exclude_none=True)

    def merge_results(self, results: dict[str, Any]) -> None:
        """Copy result fields from a reply onto this object, validated in one pass."""
        known = {k: v for k, v in results.items() if k in self.RESULT_FIELDS}
        if not known:
            return
        checked = _results_model(type(self)).model_validate(known)
        for name in known:
            self.__dict__[name] = getattr(checked, name)

    def copy_results_from(self, other: Task) -> None:
        """Adopt another task's results and status (a method answering with a sub-task's output)."""
        self.merge_results(other.results())
        self.set_outcome(other.status, other.error)

    def raise_for_status(self) -> None:
        """Raise ``TaskFailed`` unless the task succeeded: failures never pass as empty output."""
        if self.status is TaskStatus.SUCCESS:
            return
        info = self.error
        raise TaskFailed(
            f"{self.kind} task {self.id} on tag {self.worker_tag!r} ended {self.status.value}"
            + (f": {info.message}" if info else ""),
            code=info.code if info else None,
            retryable=info.retryable if info else False,
            details={
                **(info.details if info else {}),
                "task_id": self.id,
                "kind": self.kind,
                "worker_tag": self.worker_tag,
                "status": self.status.value,
                "attempts": (info.details.get("attempts", 1) if info else 1),
            },
        )


_RESULT_MODELS: dict[type[Task], type[BaseModel]] = {}


def _results_model(cls: type[Task]) -> type[BaseModel]:
    """A model of just the result fields of ``cls``, to validate a reply's results at once."""
    model = _RESULT_MODELS.get(cls)
    if model is None:
        fields: dict[str, Any] = {name: (cls.model_fields[name].annotation, None) for name in sorted(cls.RESULT_FIELDS)}
        model = _RESULT_MODELS[cls] = create_model(
            f"{cls.__name__}Results", __config__=ConfigDict(strict=True), **fields
        )
    return model


INT64_MAX = 2**63 - 1
"""Integers on the wire are MessagePack int64 (seeds, token counts)."""


class SamplingParams(BaseModel):
    """The sampling set. ``None`` means "the backend's default", so anything can override it."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0, le=INT64_MAX)
    min_tokens: int | None = Field(default=None, ge=0, le=INT64_MAX)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    """Multiplicative penalty on tokens already in the context (1 = none; llama.cpp's
    ``repeat_penalty``, vLLM's and TensorRT-LLM's ``repetition_penalty``)."""
    n: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    num_logprobs: int | None = Field(default=None, ge=0, le=20)
    ignore_eos: bool | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)
    return_context_logits: bool | None = None


class GenerationChoice(BaseModel):
    """One of several outputs when ``n`` > 1."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None


_GENERATION_RESULTS = frozenset(
    {
        "output_str",
        "output_tokens",
        "finish_reason",
        "logprobs",
        "choices",
        "context_logits",
        "usage",
        "ttft_s",
        "latency_s",
        "customized_result_fields",
    }
)


class GenerationTask(Task, SamplingParams):
    """A text completion: prompt text or token ids in, text and tokens out."""

    kind: ClassVar[str] = "generation"
    RESULT_FIELDS: ClassVar[frozenset[str]] = _GENERATION_RESULTS

    input_str: str | None = None
    input_tokens: list[int] | None = None
    skip_tokenizer: bool = False
    skip_detokenizer: bool = False

    output_str: str | None = None
    output_tokens: list[int] | None = None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    choices: list[GenerationChoice] | None = None
    context_logits: list[list[float]] | None = None
    usage: Usage | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    customized_result_fields: dict[str, Any] | None = None

    @classmethod
    def from_prompt(cls, prompt: str, **fields: Any) -> GenerationTask:
        return cls(input_str=prompt, **fields)


class StreamingTask(Task):
    """What makes a task streamed (not a kind of its own): a controller re-yields it until
    ``end_flag``; each yield returns after at least ``streaming_step`` new tokens, with the
    results so far; setting ``cancel_flag`` stops it at the backend."""

    streaming_step: int = Field(default=1, ge=1)
    cancel_flag: bool = False
    end_flag: bool = False
    request_handle: Any = Field(default=None, exclude=True)


class StreamingGenerationTask(GenerationTask, StreamingTask):
    """A generation a controller re-yields until ``end_flag``: each yield returns after at
    least ``streaming_step`` new tokens; setting ``cancel_flag`` stops it at the backend."""

    kind: ClassVar[str] = "streaming_generation"
    RESULT_FIELDS: ClassVar[frozenset[str]] = _GENERATION_RESULTS | {"end_flag"}


class ToolCall(BaseModel):
    """A call the assistant asks for: ``arguments`` is a JSON text, as OpenAI sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    name: str
    arguments: str = "{}"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ToolDefinition(BaseModel):
    """A tool offered to the model; ``parameters`` is a JSON Schema object."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ChatTask(Task, SamplingParams):
    """A chat turn: role messages (and tools) in, one assistant message out."""

    kind: ClassVar[str] = "chat"
    RESULT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "output_message",
            "output_str",
            "finish_reason",
            "logprobs",
            "usage",
            "ttft_s",
            "latency_s",
            "customized_result_fields",
        }
    )

    messages: list[ChatMessage]
    tools: list[ToolDefinition] | None = None
    tool_choice: str | None = None

    output_message: ChatMessage | None = None
    output_str: str | None = None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: Usage | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    customized_result_fields: dict[str, Any] | None = None


class StreamingChatTask(ChatTask, StreamingTask):
    """A chat turn a controller re-yields until ``end_flag``: each yield returns after at
    least ``streaming_step`` new tokens, with the assistant's text so far (tool calls are
    complete only in the final result); setting ``cancel_flag`` stops it at the backend. A
    worker with no streaming handler for it runs it as one plain chat."""

    kind: ClassVar[str] = "streaming_chat"
    RESULT_FIELDS: ClassVar[frozenset[str]] = ChatTask.RESULT_FIELDS | {"end_flag"}


class RewardTask(Task):
    """Batched scoring. Outcome mode: one score per candidate. Process mode: one score per
    step of each candidate (``steps[i]`` are the steps of candidate ``i``)."""

    kind: ClassVar[str] = "reward"
    DEFAULT_TAG: ClassVar[str] = "reward"
    RESULT_FIELDS: ClassVar[frozenset[str]] = frozenset({"scores", "step_scores", "usage", "latency_s"})

    worker_tag: str = "reward"

    mode: Literal["outcome", "process"] = "outcome"
    prompt: str = ""
    candidates: list[str] = Field(default_factory=list)
    steps: list[list[str]] | None = None
    model: str | None = None

    scores: list[float] | None = None
    step_scores: list[list[float]] | None = None
    usage: Usage | None = None
    latency_s: float | None = None


class ToolCallTask(Task):
    """Run one tool: a name and JSON arguments in; result text, stdout and stderr out."""

    kind: ClassVar[str] = "tool_call"
    DEFAULT_TAG: ClassVar[str] = "tool_call"
    RESULT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"result", "stdout", "stderr", "exit_code", "is_error", "latency_s"}
    )

    worker_tag: str = "tool_call"

    tool_name: str
    arguments: str = "{}"
    call_id: str | None = None

    result: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    is_error: bool | None = None
    latency_s: float | None = None


JOB_ID_KEY = "job_id"
"""The key of ``Task.metadata`` that names the job a task belongs to. The controller's transport
sets it on the wire; a worker may share its room fairly between jobs by it (the tools worker's
python sandbox does)."""

LIST_TOOLS = "tools/list"
"""A reserved ``tool_name``: a tools worker answers it with its tool definitions, a JSON array of
``ToolDefinition`` objects in ``result``. That is how an agent learns the tools of a worker it
did not configure (e.g. those bridged from MCP servers)."""


TASK_TYPES: dict[str, type[Task]] = {
    cls.kind: cls
    for cls in (GenerationTask, StreamingGenerationTask, ChatTask, StreamingChatTask, RewardTask, ToolCallTask)
}
"""Every task kind that can cross the bus, by its wire name."""
