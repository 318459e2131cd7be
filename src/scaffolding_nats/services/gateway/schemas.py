"""Request bodies of the HTTP API. OpenAI fields keep OpenAI's names; the method's own
parameters travel in ``method_params`` (``extra_body`` in the openai client)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...proto.messages import Budget
from ...proto.tasks import ChatMessage, ToolDefinition


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # scaffolding extensions
    method_params: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = None
    timeout: float | None = Field(default=None, gt=0, le=3600)

    def sampling(self) -> dict[str, Any]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        values = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": stop,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": self.logit_bias,
        }
        return {k: v for k, v in values.items() if v is not None}


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None

    def tool_definitions(self) -> list[ToolDefinition] | None:
        if not self.tools:
            return None
        out = []
        for tool in self.tools:
            fn = tool.get("function", tool)
            out.append(
                ToolDefinition(
                    name=fn["name"],
                    description=fn.get("description", ""),
                    parameters=fn.get("parameters") or {"type": "object", "properties": {}},
                )
            )
        return out


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str]


class JobSubmission(BaseModel):
    """Body of ``POST /v1/jobs``: a job without the fields the gateway fills in."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    sampling: dict[str, Any] | None = None
    budget: Budget | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,128}$")


FinishReason = Literal["stop", "length", "tool_calls"]
