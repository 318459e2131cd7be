"""Request bodies of the HTTP API. OpenAI fields keep OpenAI's names; the method's own
parameters travel in ``method_params`` (``extra_body`` in the openai client).

Honest surface: a field OpenAI defines is either supported or rejected with a 400 saying so,
and unknown fields are rejected (``extra="forbid"``), as OpenAI does; wrong types are not
coerced (``strict``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ...proto import codec
from ...proto.errors import ProtocolError
from ...proto.messages import Budget
from ...proto.tasks import ChatMessage, SamplingParams, ToolCall, ToolDefinition

MAX_N = 8
"""Most choices one request may ask for (each choice is one run of the method)."""

INT64 = 2**63 - 1


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form maps: JSON values only, bounded depth (a deep map is a 400, not a crash)."""
    try:
        codec.check_plain(value, max_depth=codec.MAX_DEPTH - 8)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    return value


PlainMap = Annotated[dict[str, Any], AfterValidator(_plain)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FunctionSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str = ""
    parameters: PlainMap | None = None
    strict: bool | None = None


class ToolSpec(_Strict):
    """An OpenAI tool: ``{"type": "function", "function": {"name": ..., ...}}``."""

    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionCall(_Strict):
    name: str
    arguments: str = "{}"


class ToolCallSpec(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    """An OpenAI chat message (text content; tool calls in OpenAI's nested form)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCallSpec] | None = None
    tool_call_id: str | None = None

    def to_chat(self) -> ChatMessage:
        calls = (
            [ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in self.tool_calls]
            if self.tool_calls
            else None
        )
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(
            role=role, content=self.content, name=self.name, tool_calls=calls, tool_call_id=self.tool_call_id
        )


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    type: Literal["text"]


class _OpenAIRequest(_Strict):
    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(default=None, ge=1, le=INT64)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT64)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=-INT64 - 1, le=INT64)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    top_logprobs: Any = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    # scaffolding extensions
    method_params: PlainMap = Field(default_factory=dict)
    budget: Budget | None = None
    timeout: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError("log-probabilities are not returned by this gateway (a method's answer has none)")
        return value

    def sampling(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
        )


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | None = None
    parallel_tool_calls: bool | None = None

    def chat_messages(self) -> list[ChatMessage]:
        return [m.to_chat() for m in self.messages]

    def tool_definitions(self) -> list[ToolDefinition] | None:
        if not self.tools:
            return None
        return [
            ToolDefinition(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in self.tools
        ]


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str]


class JobSubmission(_Strict):
    """Body of ``POST /v1/jobs``: a job without the fields the gateway fills in."""

    method: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    params: PlainMap = Field(default_factory=dict)
    model: str | None = None
    sampling: SamplingParams | None = None
    budget: Budget | None = None
    metadata: PlainMap = Field(default_factory=dict)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,128}$")


FinishReason = Literal["stop", "length", "tool_calls"]
