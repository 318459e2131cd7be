"""A tool-using agent loop: chat with tools; when the assistant asks for tool calls, run them
all at once (tag "tool_call"), append the results as tool messages and ask again, up to
``max_iterations`` model turns. The final assistant text is the output.

With ``discover_tools`` the agent first asks the tools worker for its definitions (the reserved
tool name ``tools/list``), so tools the worker bridges from MCP servers are offered without
repeating their schemas in the method config; a list of names keeps only those."""

from __future__ import annotations

import json
from typing import Any

from ..proto.tasks import LIST_TOOLS, ChatMessage, ChatTask, GenerationTask, Task, ToolCallTask, ToolDefinition
from ..runtime.context import emit_progress
from ..runtime.controller import ControllerGen, Output
from .kit.answers import Extractor, get_extractor
from .kit.base import (
    SAMPLING_FIELDS,
    MethodController,
    ParamError,
    fail_all,
    fill_unset,
    require,
    set_method_result,
    succeed,
    validate_sampling,
)
from .kit.results import AgentOutcome
from .native import as_messages


def tool_message(call: ToolCallTask) -> ChatMessage:
    """What the model sees of a tool run; a failure is reported to it, not raised."""
    if not call.ok:
        reason = call.error.message if call.error else call.status.value
        content = f"error: tool {call.tool_name!r} failed: {reason}"
    elif call.is_error:
        content = f"error: {call.result or call.stderr or ''}".strip()
    else:
        content = call.result if call.result is not None else (call.stdout or "")
    return ChatMessage(role="tool", content=content, tool_call_id=call.call_id, name=call.tool_name)


def _listed_tools(listing: ToolCallTask) -> list[ToolDefinition] | None:
    """The definitions a ``tools/list`` call returned; ``None`` if it failed or is unreadable."""
    if not listing.ok or listing.is_error or listing.result is None:
        return None
    try:
        items = json.loads(listing.result)
        return [ToolDefinition.model_validate(item) for item in items]
    except (ValueError, TypeError):
        return None


class ToolAgentController(MethodController):
    """Chat with tools: assistant tool calls become tool-call tasks, run concurrently, whose
    results go back as tool messages, until the model answers or ``max_iterations``."""

    name = "tool_agent"
    kind = "tool_agent"
    accepts_messages = True  # the controller service passes chat messages through unrendered

    def __init__(
        self,
        tools: list[ToolDefinition | dict[str, Any]] | None = None,
        *,
        max_iterations: int = 5,
        system_prompt: str | None = None,
        tool_choice: str | None = None,
        chat_tag: str | None = None,
        tool_tag: str = "tool_call",
        discover_tools: bool | list[str] = False,
        extractor: str | Extractor | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        require(max_iterations >= 1, "max_iterations", "must be at least 1")
        super().__init__(name)
        try:
            self.tools = [
                t if isinstance(t, ToolDefinition) else ToolDefinition.model_validate(t) for t in tools or []
            ]
        except ValueError as exc:
            raise ParamError("tools", str(exc)) from None
        require(
            isinstance(discover_tools, bool)
            or (isinstance(discover_tools, list) and all(isinstance(n, str) for n in discover_tools)),
            "discover_tools",
            "must be true, false or a list of tool names",
        )
        self.discover_tools = discover_tools
        self.max_iterations = max_iterations
        self.system_prompt = system_prompt
        self.tool_choice = tool_choice
        self.chat_tag = chat_tag
        self.tool_tag = tool_tag
        self.extractor = get_extractor(extractor) if extractor is not None else None
        self.sampling = validate_sampling(sampling)
        self.messages: list[ChatMessage] = []

    def generate(self, prompt: Any, **kwargs: Any) -> ControllerGen:
        """``prompt``: a string (one user turn) or chat messages."""
        return (yield from self._run(ChatTask(messages=as_messages(prompt)), **kwargs))

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        if isinstance(caller, ChatTask):
            messages = list(caller.messages)
        else:
            messages = as_messages(caller.input_str if isinstance(caller, GenerationTask) else "")
        if self.system_prompt and not any(m.role == "system" for m in messages):
            messages.insert(0, ChatMessage(role="system", content=self.system_prompt))
        self.messages, self._output = messages, None
        tools = list(self.tools)
        if self.discover_tools:
            listing = ToolCallTask(tool_name=LIST_TOOLS, worker_tag=self.tool_tag)
            yield [listing]
            found = _listed_tools(listing)
            if found is None:
                fail_all(tasks, "could not list the tools of the tools worker", cause=listing)
                return
            wanted = self.discover_tools if isinstance(self.discover_tools, list) else None
            known = {t.name for t in tools}
            tools += [t for t in found if t.name not in known and (wanted is None or t.name in wanted)]
        tool_calls = 0
        stop = "completed"
        last: ChatTask | None = None
        turns = 0
        for turn in range(self.max_iterations):
            chat = ChatTask(messages=list(messages), tools=tools or None, tool_choice=self.tool_choice)
            fill_unset(chat, {k: getattr(caller, k, None) for k in SAMPLING_FIELDS})
            fill_unset(chat, self.sampling)
            if self.chat_tag is not None:
                chat.worker_tag = self.chat_tag
            yield [chat]
            if not chat.ok:
                fail_all(tasks, f"chat turn {turn + 1} failed", cause=chat)
                return
            last, turns = chat, turn + 1
            reply = chat.output_message or ChatMessage(role="assistant", content=chat.output_str)
            messages.append(reply)
            if not reply.tool_calls:
                break
            calls = [
                ToolCallTask(tool_name=c.name, arguments=c.arguments, call_id=c.id, worker_tag=self.tool_tag)
                for c in reply.tool_calls
            ]
            yield calls
            tool_calls += len(calls)
            messages.extend(tool_message(c) for c in calls)
            emit_progress(method=self.label, turn=turn + 1, tool_calls=[c.tool_name for c in calls])
        else:
            stop = "max_iterations"
        assert last is not None
        text = (messages[-1].content or "") if messages[-1].role == "assistant" else (last.output_str or "")
        outcome = AgentOutcome(
            turns=turns,
            tool_calls=tool_calls,
            stop=stop,
            messages=[m.model_dump(exclude_none=True) for m in messages],
        )
        answer = self.extractor(text) if self.extractor else None
        self._output = Output(text=text, answer=answer, finish_reason=last.finish_reason, result=outcome)
        if isinstance(caller, ChatTask):
            caller.output_message = messages[-1] if messages[-1].role == "assistant" else last.output_message
        succeed(caller, text, usage=None)
        set_method_result(caller, answer, tool_calls=tool_calls, stop=stop)

    def _partial(self) -> Output | None:
        replies = [m for m in self.messages if m.role == "assistant" and m.content]
        if not replies:
            return None
        return Output(text=replies[-1].content or "", metadata={"partial": True})
