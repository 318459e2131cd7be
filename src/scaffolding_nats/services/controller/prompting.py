"""Turn a job's chat messages into what its method takes: the messages themselves for chat-aware
methods, else one prompt in the model's chat format (completion-style methods such as Dynasor
extend that prompt, so it must end where the assistant's answer begins)."""

from __future__ import annotations

from typing import Any

from ...proto.messages import Job
from ...proto.tasks import ChatMessage
from ...runtime.controller import Controller


def _chatml(messages: list[ChatMessage]) -> str:
    parts = [f"<|im_start|>{m.role}\n{m.content or ''}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def _plain(messages: list[ChatMessage]) -> str:
    parts = [f"{m.role.capitalize()}: {m.content or ''}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


TEMPLATES = {"chatml": _chatml, "plain": _plain}


def prompt_for(job: Job, controller: Controller, template: str = "chatml") -> Any:
    """A completion job's prompt is passed as-is (OpenAI semantics); a chat job's messages go
    to chat-aware controllers unchanged and are rendered with ``template`` for the others."""
    accepts_messages = controller.accepts_messages
    if job.messages:
        if accepts_messages:
            return list(job.messages)
        return TEMPLATES[template](list(job.messages))
    prompt = job.prompt or ""
    if accepts_messages:
        return [ChatMessage(role="user", content=prompt)]
    return prompt


def sampling_defaults(job: Job) -> dict[str, Any]:
    """The job's sampling settings (and model), as defaults of each of its method's tasks."""
    defaults = job.sampling.model_dump(exclude_none=True) if job.sampling is not None else {}
    if job.model is not None:
        defaults.setdefault("model", job.model)
    return defaults
