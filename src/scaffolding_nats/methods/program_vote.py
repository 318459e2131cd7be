"""Program-aided voting (PAL): each sample is a short Python program that computes the answer;
the programs run in the tools worker's sandbox and their printed outputs are voted.

A coder model often gets arithmetic wrong in prose and right in code: the program does the
arithmetic, the vote removes the programs that misread the problem."""

from __future__ import annotations

import json
import re
from typing import Any

from ..proto.tasks import ChatMessage, ChatTask, Task, ToolCallTask
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.answers import Extractor, get_extractor
from .kit.base import (
    MethodController,
    Slot,
    branch_seed,
    fail_all,
    fan_out,
    fill_unset,
    prompt_of,
    require,
    set_method_result,
    succeed,
    text_of,
    validate_sampling,
)
from .kit.results import VoteOutcome
from .kit.voting import vote
from .native import NativeChatController, as_messages

PROGRAM_INSTRUCTION = (
    "Write a short Python program that solves this problem and prints the final answer as a "
    "plain number. Reply with the program in a single ```python code block."
)
"""Shows no answer template to copy: the program's output is the answer."""

_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_FUNCTION = re.compile(r"^def\s+(\w+)\s*\(\s*\)\s*:", re.MULTILINE)


def extract_program(text: str) -> str | None:
    """The program of a reply: its last non-empty fenced code block (a block cut off by the
    token limit counts), else the whole reply when it reads as code. A program that defines a
    no-argument function and never prints gets a ``print`` of that function's result."""
    blocks = [b.strip() for b in _CODE_BLOCK.findall(text) if b.strip()]
    if blocks:
        code = blocks[-1]
    elif re.search(r"^\s*(?:print\(|def |import |\w+\s*=)", text, re.MULTILINE):
        code = text.strip()
    else:
        return None
    if "print(" not in code:
        functions = _FUNCTION.findall(code)
        if functions:
            code += f"\n\nprint({functions[-1]}())"
    return code


class ProgramVoteController(MethodController):
    """``sample_num`` program samples (chat turns, seeded per branch), each program run by the
    tool ``tool_name`` (arguments ``{"code": ...}``, result text = its stdout) on the tools
    worker, and a vote over the numbers the programs print. Programs that fail, time out or
    print nothing abstain; if none answers, the first reply is returned without an answer
    (``fallback: no_answer``); only when every sample failed does the job fail."""

    name = "program_vote"
    kind = "program_vote"
    slots = {"sampler": Slot("sample_controller", default={"method": "chat"})}
    accepts_messages = True

    def __init__(
        self,
        sample_controller: Controller | None = None,
        sample_num: int = 5,
        *,
        tool_name: str = "python",
        tool_tag: str | None = None,
        instruction: str = PROGRAM_INSTRUCTION,
        extractor: str | Extractor | None = "number",
        base_seed: int | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        require(sample_num >= 1, "sample_num", "must be at least 1")
        require(bool(tool_name), "tool_name", "must name a tool")
        super().__init__(name)
        self.sample_controller = sample_controller or NativeChatController(name="program")
        self.sample_num = sample_num
        self.tool_name = tool_name
        self.tool_tag = tool_tag
        self.instruction = instruction
        self.extractor = get_extractor(extractor)
        self.base_seed = base_seed
        self.sampling = validate_sampling(sampling)
        self._samples: list[ChatTask] = []
        self._runs: list[ToolCallTask | None] = []

    def generate(self, prompt: Any, **kwargs: Any) -> ControllerGen:
        caller = ChatTask(messages=as_messages(prompt))
        return (yield from self._run(caller, **kwargs))

    def _messages(self, caller: Task) -> list[ChatMessage]:
        """The caller's conversation with the instruction added to its last user turn."""
        messages = list(caller.messages) if isinstance(caller, ChatTask) else as_messages(prompt_of(caller))
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].role == "user":
                content = f"{messages[i].content or ''}\n\n{self.instruction}"
                messages[i] = messages[i].model_copy(update={"content": content})
                break
        else:
            messages.append(ChatMessage(role="user", content=self.instruction))
        return messages

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output = None
        messages = self._messages(caller)
        self._samples = []
        for i in range(self.sample_num):
            sample = ChatTask(messages=messages, seed=branch_seed(caller, i, self.base_seed))
            fill_unset(sample, {k: getattr(caller, k, None) for k in ("max_tokens", "temperature", "top_p")})
            fill_unset(sample, self.sampling)
            self._samples.append(sample)
        yield fan_out(self.sample_controller, self._samples, kwargs)
        programs = [extract_program(text_of(s)) if s.ok else None for s in self._samples]
        self._runs = [
            ToolCallTask(tool_name=self.tool_name, arguments=json.dumps({"code": code}))
            if code is not None
            else None
            for code in programs
        ]
        if self.tool_tag is not None:
            for run in self._runs:
                if run is not None:
                    run.worker_tag = self.tool_tag
        to_run = [r for r in self._runs if r is not None]
        if to_run:
            yield to_run
        outputs = [self._program_output(r) for r in self._runs]
        answers = [self.extractor(o) if o is not None else None for o in outputs]
        result = vote(answers)
        emit_progress(method=self.label, samples=self.sample_num, programs=len(to_run), answered=len(result.tally))
        outcome = VoteOutcome(
            num_samples=self.sample_num,
            num_succeeded=sum(s.ok for s in self._samples),
            num_answered=sum(a is not None for a in answers),
            answers=list(answers),
            votes={k: float(v) for k, v in result.tally.items()},
        )
        if result.index is None:
            # No program printed an answer (none written, all failed, or cut short by a budget):
            # the first reply that came back, unanswered, as a majority vote does.
            first = next((i for i, s in enumerate(self._samples) if s.ok), None)
            if first is None:
                fail_all(tasks, f"all {self.sample_num} samples failed", cause=self._samples[0])
                return
            outcome.index, outcome.fallback = first, "no_answer"
            text = text_of(self._samples[first])
            succeed(caller, text, output_message=ChatMessage(role="assistant", content=text))
            set_method_result(caller, None, **outcome.to_metadata())
            self._output = Output(text=text, answer=None, result=outcome)
            return
        index = result.index
        program, printed = programs[index] or "", outputs[index] or ""
        text = f"```python\n{program}\n```\n\nOutput: {printed.strip()}\n\nAnswer: {result.answer}"
        outcome.index = index
        winner = self._samples[index]
        succeed(
            caller,
            text,
            output_message=ChatMessage(role="assistant", content=text),
            finish_reason=winner.finish_reason,
        )
        set_method_result(caller, result.answer, **outcome.to_metadata())
        self._output = Output(text=text, answer=result.answer, result=outcome)

    def _program_output(self, run: ToolCallTask | None) -> str | None:
        """What a program printed, or ``None`` when it failed or printed nothing."""
        if run is None or not run.ok or run.is_error:
            return None
        out = run.result if run.result is not None else run.stdout
        return out if out and out.strip() else None
