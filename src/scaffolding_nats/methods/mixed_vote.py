"""A mixed vote: chain-of-thought samples and program samples vote together, and an answer both
kinds reach wins over one only a single kind gives.

The two kinds fail differently: reasoning in prose misreads less and miscalculates more, a
program calculates exactly and misreads more. Plain voting within one kind cannot tell a
correct minority from noise; agreement across kinds is evidence it can use. Rule ``agree``
(default): among the answers that both a CoT sample and a program printed, the one with the
most votes (CoT votes plus ``program_weight`` times program votes); when no answer is shared, the
pooled vote over both kinds. Rule ``pooled``: always the pooled vote.

Both sub-methods run as one parallel group, each on a task of the kind it takes (the CoT vote a
completion prompt in the chat format, the program vote the conversation), seeded exactly as
when they run alone, so the mixed vote re-aggregates the very samples ``majority_vote`` and
``program_vote`` would draw for the same job."""

from __future__ import annotations

from typing import Any, Literal

from ..proto.tasks import ChatMessage, ChatTask, GenerationTask, Task
from ..runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from .kit.answers import normalize_answer
from .kit.base import (
    SAMPLING_FIELDS,
    Isolated,
    MethodController,
    Slot,
    fail_all,
    prompt_of,
    require,
    set_method_result,
    succeed,
    text_of,
)
from .kit.results import VoteOutcome
from .native import as_messages

Rule = Literal["agree", "pooled"]

COT_INSTRUCTION = (
    "Solve the problem step by step. Then write the final answer on its own last line, "
    'starting with "Answer:".'
)
"""Added to the CoT samples' last user turn (the program samples get ``program_vote``'s own
instruction): the question itself comes bare. No answer template to copy back."""


def with_instruction(messages: list[ChatMessage], instruction: str | None) -> list[ChatMessage]:
    """The conversation with ``instruction`` appended to its last user turn."""
    if not instruction:
        return list(messages)
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].role == "user":
            out[i] = out[i].model_copy(update={"content": f"{out[i].content or ''}\n\n{instruction}"})
            return out
    return [*out, ChatMessage(role="user", content=instruction)]


def chatml(messages: list[ChatMessage]) -> str:
    """The conversation as a ChatML completion prompt, ending where the assistant answers: the
    controller service's default template (``services.controller.prompting``), so the CoT
    samples see what a ``majority_vote`` job's samples see."""
    parts = [f"<|im_start|>{m.role}\n{m.content or ''}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def mixed_choice(
    cot: list[str | None], program: list[str | None], *, rule: Rule = "agree", program_weight: float = 1.0
) -> tuple[str | None, bool]:
    """The chosen answer key and whether both kinds reached it. Ties go to the answer a CoT
    sample gave first, then a program."""
    score: dict[str, float] = {}
    order: dict[str, int] = {}
    kinds: dict[str, set[str]] = {}
    for kind, answers, weight in (("cot", cot, 1.0), ("program", program, program_weight)):
        for a in answers:
            if a is None:
                continue
            key = normalize_answer(a)
            score[key] = score.get(key, 0.0) + weight
            order.setdefault(key, len(order))
            kinds.setdefault(key, set()).add(kind)
    if not score:
        return None, False
    shared = [k for k in score if len(kinds[k]) == 2]
    pool = shared if rule == "agree" and shared else list(score)
    best = max(pool, key=lambda k: (score[k], -order[k]))
    return best, len(kinds[best]) == 2


class MixedVoteController(MethodController):
    """Runs the ``cot`` method (a vote over reasoning samples, asked with ``cot_instruction``)
    and the ``program`` method (a vote over executed programs) at once and chooses from all
    their answers by ``rule``. The
    result lists every sample's answer (``answers``: the CoT samples', then the programs'),
    each kind's vote, and ``agreement`` (whether both kinds reached the chosen answer)."""

    name = "mixed_vote"
    kind = "mixed_vote"
    accepts_messages = True
    slots = {
        "cot": Slot("cot_controller", default={"method": "majority_vote", "params": {"sample_num": 8}}),
        "program": Slot("program_controller", default={"method": "program_vote", "params": {"sample_num": 5}}),
    }

    def __init__(
        self,
        cot_controller: Controller | None = None,
        program_controller: Controller | None = None,
        *,
        rule: Rule = "agree",
        program_weight: float = 1.0,
        cot_instruction: str | None = COT_INSTRUCTION,
        name: str | None = None,
    ) -> None:
        require(cot_controller is not None, "cot", "a chain-of-thought vote is needed")
        require(program_controller is not None, "program", "a program vote is needed")
        require(program_weight > 0, "program_weight", "must be positive")
        super().__init__(name)
        assert cot_controller is not None and program_controller is not None
        self.cot_controller = cot_controller
        self.program_controller = program_controller
        self.rule = rule
        self.program_weight = program_weight
        self.cot_instruction = cot_instruction

    def generate(self, prompt: Any, **kwargs: Any) -> ControllerGen:
        return (yield from self._run(ChatTask(messages=as_messages(prompt)), **kwargs))

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._output = None
        messages = list(caller.messages) if isinstance(caller, ChatTask) else as_messages(prompt_of(caller))
        sampling = {k: getattr(caller, k) for k in SAMPLING_FIELDS if getattr(caller, k, None) is not None}
        cot_task = GenerationTask(input_str=chatml(with_instruction(messages, self.cot_instruction)), **sampling)
        program_task = ChatTask(messages=messages, **sampling)
        cot, program = self.cot_controller.clone(), self.program_controller.clone()
        yield ParallelProcess(
            [Isolated(cot), Isolated(program)], [[cot_task], [program_task]], [dict(kwargs), dict(kwargs)]
        )
        cot_answers = _answers(cot, cot_task)
        program_answers = _answers(program, program_task)
        if not cot_task.ok and not program_task.ok:
            fail_all(tasks, "both the chain-of-thought and the program vote failed", cause=cot_task)
            return
        key, agreement = mixed_choice(cot_answers, program_answers, rule=self.rule, program_weight=self.program_weight)
        outcome = VoteOutcome(
            num_samples=len(cot_answers) + len(program_answers),
            num_answered=sum(a is not None for a in [*cot_answers, *program_answers]),
            answers=[*cot_answers, *program_answers],
            votes=_tally(cot_answers, program_answers, self.program_weight),
        )
        outcome.num_succeeded = outcome.num_samples
        text, answer, index = _winner(key, (cot, cot_answers), (program, program_answers))
        if text is None:  # no sample of either kind answered: the CoT vote's own fallback
            source = cot_task if cot_task.ok else program_task
            text, outcome.fallback = text_of(source), "no_answer"
        outcome.index = index
        succeed(caller, text, output_message=ChatMessage(role="assistant", content=text))
        extra = {"cot_answers": cot_answers, "program_answers": program_answers, "agreement": agreement}
        set_method_result(caller, answer, **outcome.to_metadata(), **extra, rule=self.rule)
        self._output = Output(text=text, answer=answer, result=outcome, metadata={**extra, "rule": self.rule})


def _answers(controller: Controller, task: Task) -> list[str | None]:
    """Every sample's answer of a finished sub-vote (its typed result), ``[]`` if it failed."""
    output = getattr(controller, "_output", None)
    result = getattr(output, "result", None)
    if not task.ok or not isinstance(result, VoteOutcome) or result.answers is None:
        return []
    return list(result.answers)


def _tally(cot: list[str | None], program: list[str | None], weight: float) -> dict[str, float]:
    tally: dict[str, float] = {}
    for answers, w in ((cot, 1.0), (program, weight)):
        for a in answers:
            if a is not None:
                key = normalize_answer(a)
                tally[key] = tally.get(key, 0.0) + w
    return tally


def _winner(
    key: str | None, *kinds: tuple[Controller, list[str | None]]
) -> tuple[str | None, str | None, int | None]:
    """The text of the first sample that gave the chosen answer (a CoT sample's before a
    program's; a program's with its printed answer), that answer as written, and the sample's
    index in ``answers``."""
    if key is None:
        return None, None, None
    offset = 0
    for controller, answers in kinds:
        samples = getattr(controller, "_samples", None) or []
        for i, a in enumerate(answers):
            if a is not None and normalize_answer(a) == key:
                text = text_of(samples[i]) if i < len(samples) else ""
                if isinstance(samples[i] if i < len(samples) else None, ChatTask):  # a program
                    text = f"{text.rstrip()}\n\nAnswer: {a}"
                return text, a, offset + i
        offset += len(answers)
    return None, None, None
