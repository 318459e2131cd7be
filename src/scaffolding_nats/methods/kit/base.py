"""The public base of methods: ``MethodController`` and ``SamplingMethod`` to subclass, the
``Slot`` declaration of sub-controllers, the typed results, and the helpers a method needs
(deriving branch tasks and their seeds, isolating branches, validating parameters, marking a
caller's task done or failed).

A method is one class, declared on the class itself and built from config by the registry::

    class MyVote(SamplingMethod):
        kind = "my_vote"                       # the config's ``method`` (or "pkg.module:MyVote")
        slots = {"sampler": Slot("sample_controller", default={"method": "native"})}

(``scaffolding_nats.methods.base`` is the same module under its documented name.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

from ...errors import BudgetExhausted
from ...proto.errors import ErrorCode, ErrorInfo
from ...proto.tasks import ChatTask, GenerationTask, SamplingParams, Task, TaskStatus
from ...runtime.context import current_request
from ...runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from ...runtime.worker import error_info, fail
from .answers import Extractor, get_extractor
from .results import MethodResult, ScoredOutcome, VoteOutcome  # noqa: F401  (public here)

SAMPLING_FIELDS: tuple[str, ...] = tuple(SamplingParams.model_fields)


@dataclass(frozen=True)
class Slot:
    """A sub-controller a method takes: the constructor argument a config key fills, and the
    config used when the key is absent (``None``: the class's own default)."""

    arg: str
    default: Any = None


class ParamError(ValueError):
    """A bad constructor parameter; ``param`` names it so a config loader can point at it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.reason = message


def require(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise ParamError(param, message)


def validate_sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    """Check sampling overrides against the wire model; keep only the ones that are set."""
    from pydantic import ValidationError

    unknown = sorted(set(sampling) - set(SAMPLING_FIELDS))
    if unknown:
        raise ParamError(unknown[0], f"unknown sampling parameter (known: {', '.join(SAMPLING_FIELDS)})")
    try:
        return SamplingParams(**sampling).model_dump(exclude_none=True)
    except ValidationError as exc:
        loc = exc.errors()[0].get("loc") or ("sampling",)
        raise ParamError(str(loc[0]), exc.errors()[0].get("msg", str(exc))) from None


def fill_unset(task: Task, values: dict[str, Any]) -> None:
    """Set each field the task leaves ``None``: what the caller set on the task wins."""
    for key, value in values.items():
        if hasattr(task, key) and getattr(task, key) is None:
            setattr(task, key, value)


def prompt_of(task: Task) -> str:
    if isinstance(task, GenerationTask):
        return task.input_str or ""
    if isinstance(task, ChatTask):
        for msg in reversed(task.messages):
            if msg.role == "user":
                return msg.content or ""
    return ""


def text_of(task: Task) -> str:
    return getattr(task, "output_str", None) or ""


def derive_generation(task: Task, cls: type[GenerationTask] = GenerationTask, **overrides: Any) -> Any:
    """A fresh generation task with the caller's prompt and sampling, plus ``overrides``."""
    fields: dict[str, Any] = {}
    if isinstance(task, GenerationTask):
        fields.update({k: getattr(task, k) for k in SAMPLING_FIELDS if getattr(task, k) is not None})
        fields.update(input_str=task.input_str, input_tokens=task.input_tokens, worker_tag=task.worker_tag)
        fields = {k: v for k, v in fields.items() if v is not None}
    elif isinstance(task, ChatTask):
        fields.update({k: getattr(task, k) for k in SAMPLING_FIELDS if getattr(task, k) is not None})
        fields["input_str"] = prompt_of(task)
    fields.update(overrides)
    return cls(**fields)


def branch_seed(task: Task, index: int, base_seed: int | None) -> int | None:
    """Distinct seeds per branch, so deterministic backends still give different samples.

    The seed a branch derives from, first set wins: the caller's task (set by an enclosing
    method), the job's own seed (``sampling.seed`` / OpenAI ``seed``), the method's
    ``base_seed``. A task or job seed is mixed with ``index`` (nested methods never repeat
    each other's samples); ``base_seed`` gives ``base_seed + index``; none gives ``None`` (the
    backend's own randomness). A job seed must never reach every branch as it is: that turns
    N samples into N copies of one, so it makes the *job* reproducible instead."""
    seed = getattr(task, "seed", None)
    if seed is None:
        seed = job_seed()
    if seed is not None:
        return mix_seed(seed, index)
    if base_seed is not None:
        return base_seed + index
    return None


def cut_off(task: Task) -> bool:
    """Whether a generation ended at its token limit (``finish_reason == "length"``)."""
    return getattr(task, "finish_reason", None) == "length"


def mix_seed(seed: int, index: int) -> int:
    """A seed for branch ``index`` under ``seed``: deterministic, distinct per index."""
    return (seed * 1_000_003 + index + 1) % 2_147_483_647


def job_seed() -> int | None:
    """The running job's seed (its sampling defaults), if it set one."""
    return job_default("seed")


def job_default(name: str) -> int | None:
    """An integer sampling default of the running job (``seed``, ``max_tokens``), if set."""
    ctx = current_request()
    value = ctx.sampling_defaults.get(name) if ctx is not None else None
    return value if isinstance(value, int) else None


def succeed(task: Task, text: str, **results: Any) -> None:
    """Land a method's final text on the caller's task and mark it done."""
    if isinstance(task, GenerationTask | ChatTask):
        task.output_str = text
    for key, value in results.items():
        if key in task.RESULT_FIELDS:
            setattr(task, key, value)
    task.status, task.error = TaskStatus.SUCCESS, None


def fail_all(tasks: Sequence[Task], message: str, cause: Task | None = None, **details: Any) -> None:
    """Mark the caller's tasks failed, keeping the code of the underlying failure."""
    code = cause.error.code if cause is not None and cause.error is not None else ErrorCode.WORKER_ERROR
    if cause is not None and cause.error is not None:
        message = f"{message}; first failure: {cause.error.message}"
    for task in tasks:
        fail(task, ErrorInfo(code=code, message=message, details=details))


def set_method_result(task: Task, answer: str | None, **extra: Any) -> None:
    """Put a method's answer and metadata where an enclosing method can read them."""
    fields = dict(getattr(task, "customized_result_fields", None) or {})
    fields.update(extra)
    fields["answer"] = answer
    if hasattr(task, "customized_result_fields"):
        task.customized_result_fields = _jsonable(fields)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Isolated(Controller):
    """Runs one branch so that its exceptions fail its own tasks instead of cancelling its
    siblings (a vote survives one broken sample). Budget exhaustion still ends the request."""

    def __init__(self, inner: Controller) -> None:
        super().__init__()
        self.inner = inner
        self.task_collections = inner.task_collections

    @property
    def label(self) -> str:
        return self.inner.label

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        try:
            return (yield from self.inner.process(tasks, **kwargs))
        except BudgetExhausted:
            raise
        except Exception as exc:
            for task in tasks:
                fail(task, error_info(exc))
            return None


def isolated_clones(controller: Controller, n: int) -> list[Controller]:
    """``n`` independent copies of a sub-controller, each isolated from the others' errors."""
    return [Isolated(controller.clone()) for _ in range(n)]


def best_partial(controller: Controller) -> Any:
    """A sub-controller's own best answer so far, when it offers one."""
    inner = controller.inner if isinstance(controller, Isolated) else controller
    return inner.best_so_far()


def fan_out(controller: Controller, tasks: Sequence[Task], kwargs: dict[str, Any] | None = None) -> ParallelProcess:
    """One isolated clone of ``controller`` per task (each called with ``kwargs``), as one parallel group."""
    return ParallelProcess(
        isolated_clones(controller, len(tasks)), [[t] for t in tasks], [dict(kwargs or {}) for _ in tasks]
    )


class MethodController(Controller):
    """Base of the methods that build an ``Output`` of their own: ``generate`` runs ``process`` on
    a fresh task and returns ``self._output``; ``best_so_far`` is that output once there is one,
    else the method's ``_partial`` answer (asked for when a budget runs out).

    ``kind`` names the method in configs and ``slots`` declares its sub-controllers (config
    key -> ``Slot``); the registry reads both from the class (``kind`` only where the class
    itself sets it, so a subclass is not registered twice by inheritance)."""

    kind: ClassVar[str | None] = None
    slots: ClassVar[dict[str, Slot]] = {}

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        if name is not None:
            self.name = name
        self._output: Output | None = None

    def generate(self, prompt: str, **kwargs: Any) -> ControllerGen:
        return (yield from self._run(GenerationTask(input_str=prompt), **kwargs))

    def _run(self, task: Task, **kwargs: Any) -> ControllerGen:
        yield from self.process([task], **kwargs)
        task.raise_for_status()
        assert self._output is not None
        if self._output.finish_reason is None:  # the chosen sample's, as it landed on the task
            self._output.finish_reason = getattr(task, "finish_reason", None)
        return self._output

    def best_so_far(self) -> Output | None:
        return self._output if self._output is not None else self._partial()

    def _partial(self) -> Output | None:
        return None


class SamplingOptions(TypedDict, total=False):
    """The parameters every sampling method takes besides its sampler and ``sample_num``,
    passed on as ``**options`` (defaults: ``SamplingMethod.__init__``'s)."""

    extractor: str | Extractor | None
    base_seed: int | None
    name: str | None


class SamplingMethod(MethodController):
    """Base of the methods that run ``sample_num`` independent samples of a sub-controller and
    pick one (majority vote, best-of-N). Each subclass chooses its own default sampler."""

    def __init__(
        self,
        sample_controller: Controller,
        sample_num: int,
        extractor: str | Extractor | None = "default",
        base_seed: int | None = None,
        name: str | None = None,
    ) -> None:
        require(sample_num >= 1, "sample_num", "must be at least 1")
        super().__init__(name)
        self.sample_controller = sample_controller
        self.sample_num = sample_num
        self.extractor = get_extractor(extractor)
        self.base_seed = base_seed
        self.sample_overrides: dict[str, Any] = {}
        """Fields every sample task gets (e.g. ``num_logprobs`` for a weighted vote)."""
        self._samples: list[GenerationTask] = []
        self._branches: list[Controller] = []

    def _sample(self, caller: Task, kwargs: dict[str, Any]) -> ControllerGen:
        """Run every sample (seeded per branch, each on its own isolated clone) as one parallel
        group; returns the indices of the samples that succeeded."""
        self._samples = [
            derive_generation(caller, seed=branch_seed(caller, i, self.base_seed), **self.sample_overrides)
            for i in range(self.sample_num)
        ]
        group = fan_out(self.sample_controller, self._samples, kwargs)
        self._branches = group.controllers
        yield group
        return [i for i, t in enumerate(self._samples) if t.ok]
