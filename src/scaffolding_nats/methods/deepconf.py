"""DeepConf (Deep Think with Confidence): vote over parallel traces weighted and filtered by
the model's own token confidence (offline), or stop low-confidence traces early (online).

Offline: ``num_traces`` traces with logprobs, then a vote under ``vote_policy``.
Online: ``warmup_traces`` traces learn a threshold (the ``confidence_percentile``-th percentile
of their trace confidences; 10 keeps ~90% of traces, 90 keeps ~10%); the remaining traces are
streamed and cancelled at the backend as soon as their running group confidence drops below it.
With ``consensus`` set, the remaining traces run in waves of ``wave_size`` and no further wave
starts once the leading answer holds that share of the confidence-weighted vote (the paper's
adaptive sampling): easy problems stop after the warm-up."""

from __future__ import annotations

from typing import Any

from ..proto.tasks import GenerationTask, StreamingGenerationTask, Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output, ParallelProcess
from .kit.answers import Extractor, get_extractor, states_answer
from .kit.base import (
    Isolated,
    MethodController,
    Slot,
    branch_seed,
    cut_off,
    derive_generation,
    fail_all,
    fan_out,
    fill_unset,
    require,
    set_method_result,
    succeed,
    text_of,
    validate_sampling,
)
from .kit.confidence import (
    TRACE_CONFIDENCE,
    percentile,
    running_group_confidence,
    token_confidences,
)
from .kit.results import ConfidenceVoteOutcome
from .kit.voting import vote
from .native import NativeGenerationController
from .streaming_stop import stream_until

VOTE_POLICIES: dict[str, tuple[str | None, bool]] = {
    # policy: (trace-confidence measure overriding the configured one, keep only the top percent)
    "majority": (None, False),
    "weighted": (None, False),
    "top_percent": (None, True),
    "tail_filtered": ("tail", True),
    "bottom_window_filtered": ("bottom_window", True),
}


class _Trace:
    """One finished trace: its text, extracted answer and per-token confidences."""

    def __init__(self, text: str, answer: str | None, conf: list[float]) -> None:
        self.text, self.answer, self.conf = text, answer, conf


class _DeepConfBase(MethodController):
    """What both DeepConf controllers share: trace sampling, trace confidences and the vote.
    Its parameters (and their defaults) are those of ``DeepConfOfflineController``."""

    name = "deepconf"

    def __init__(
        self,
        num_traces: int = 8,
        *,
        conf_group_size: int = 2048,
        num_logprobs: int = 5,
        confidence_policy: str = "lowest_group",
        vote_policy: str = "top_percent",
        top_percent: float = 10.0,
        extractor: str | Extractor | None = "default",
        base_seed: int | None = None,
        trace_controller: Controller | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        require(num_traces >= 1, "num_traces", "must be at least 1")
        require(conf_group_size >= 1, "conf_group_size", "must be at least 1")
        require(1 <= num_logprobs <= 20, "num_logprobs", "must be between 1 and 20")
        require(
            confidence_policy in TRACE_CONFIDENCE, "confidence_policy", f"one of {sorted(TRACE_CONFIDENCE)}"
        )
        require(vote_policy in VOTE_POLICIES, "vote_policy", f"one of {sorted(VOTE_POLICIES)}")
        require(0 < top_percent <= 100, "top_percent", "must be in (0, 100]")
        super().__init__(name)
        self.num_traces = num_traces
        self.conf_group_size = conf_group_size
        self.num_logprobs = num_logprobs
        self.confidence_policy = confidence_policy
        self.vote_policy = vote_policy
        self.top_percent = top_percent
        self.extractor = get_extractor(extractor)
        self.base_seed = base_seed
        self.trace_controller = trace_controller or NativeGenerationController(name="sampling")
        self.sampling = validate_sampling(sampling)
        self._traces: list[_Trace] = []

    def _trace_tasks(
        self, caller: Task, start: int, count: int, cls: type[GenerationTask], **overrides: Any
    ) -> list[Any]:
        tasks = []
        for i in range(start, start + count):
            task = derive_generation(
                caller, cls, seed=branch_seed(caller, i, self.base_seed), num_logprobs=self.num_logprobs, **overrides
            )
            fill_unset(task, self.sampling)
            tasks.append(task)
        return tasks

    def _sample_traces(self, caller: Task, count: int) -> ControllerGen:
        """The first ``count`` traces, run to the end in parallel; returns their tasks and the
        traces of those that succeeded."""
        tasks = self._trace_tasks(caller, 0, count, GenerationTask)
        yield fan_out(self.trace_controller, tasks)
        return tasks, [self._trace_of(t) for t in tasks if t.ok]

    def _trace_of(self, task: GenerationTask) -> _Trace:
        text = text_of(task)
        answer = self.extractor(text) if not cut_off(task) or states_answer(text) else None
        return _Trace(text, answer, token_confidences(task.logprobs or [], self.num_logprobs))

    def trace_confidence(self, trace: _Trace, measure: str | None = None) -> float:
        return TRACE_CONFIDENCE[measure or self.confidence_policy](trace.conf, self.conf_group_size)

    def _vote(self, traces: list[_Trace], policy: str) -> tuple[int | None, dict[str, float]]:
        """Index (into ``traces``) of the winning trace, and the tally, under one policy."""
        measure, keep_top = VOTE_POLICIES[policy]
        confs = [self.trace_confidence(t, measure) for t in traces]
        chosen = list(range(len(traces)))
        if keep_top and traces:
            keep = max(1, round(len(traces) * self.top_percent / 100))
            chosen = sorted(chosen, key=lambda i: -confs[i])[:keep]
            chosen.sort()
        answers = [traces[i].answer for i in chosen]
        weights = None if policy == "majority" else [confs[i] for i in chosen]
        result = vote(answers, weights)
        return (chosen[result.index] if result.index is not None else None), result.tally

    def _decide(self, traces: list[_Trace], extra: dict[str, Any]) -> Output | None:
        if not traces:
            return None
        index, tally = self._vote(traces, self.vote_policy)
        by_policy = {}
        for policy in VOTE_POLICIES:
            i, _ = self._vote(traces, policy)
            by_policy[policy] = traces[i].answer if i is not None else None
        fields = {k: v for k, v in extra.items() if k in ConfidenceVoteOutcome.__dataclass_fields__}
        outcome = ConfidenceVoteOutcome(
            num_traces=len(traces),
            num_samples=len(traces),
            num_succeeded=len(traces),
            num_answered=sum(t.answer is not None for t in traces),
            vote_policy=self.vote_policy,
            votes=tally,
            answers=[t.answer for t in traces],
            answers_by_policy=by_policy,
            trace_confidences=[round(self.trace_confidence(t), 6) for t in traces],
            **fields,
        )
        rest = {k: v for k, v in extra.items() if k not in fields}
        if index is None:
            outcome.index, outcome.fallback = 0, "no_answer"
            return Output(text=traces[0].text, answer=None, metadata=rest, result=outcome)
        outcome.index = index
        return Output(text=traces[index].text, answer=traces[index].answer, metadata=rest, result=outcome)

    def _land(self, tasks: list[Task], output: Output) -> None:
        succeed(tasks[0], output.text)
        set_method_result(tasks[0], output.answer, votes=output.metadata.get("votes"))
        self._output = output

    def _partial(self) -> Output | None:
        return self._decide(self._traces, {"partial": True})


class DeepConfOfflineController(_DeepConfBase):
    """All traces to the end, then a confidence-aware vote (parameters: ``_DeepConfBase``'s)."""

    kind = "deepconf_offline"
    slots = {"sampler": Slot("trace_controller")}

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._traces, self._output = [], None
        samples, self._traces = yield from self._sample_traces(caller, self.num_traces)
        output = self._decide(self._traces, {"num_failed": len(samples) - len(self._traces)})
        if output is None:
            fail_all(tasks, f"all {self.num_traces} traces failed", cause=samples[0])
            return
        self._land(tasks, output)


class ConfidenceStopController(Controller):
    """Streams one trace and cancels it once its running group confidence falls below
    ``threshold`` (passed per call); the DeepConf-online building block."""

    name = "sampling"

    def __init__(
        self, *, conf_group_size: int = 2048, num_logprobs: int = 5, name: str | None = None
    ) -> None:
        super().__init__()
        self.conf_group_size = conf_group_size
        self.num_logprobs = num_logprobs
        self.stopped_early = False
        if name is not None:
            self.name = name

    def _low(self, stream: StreamingGenerationTask, threshold: float) -> bool:
        conf = token_confidences(stream.logprobs or [], self.num_logprobs)
        running = running_group_confidence(conf, self.conf_group_size)
        return running is not None and running < threshold

    def process(self, tasks: list[Task], threshold: float = float("-inf"), **kwargs: Any) -> ControllerGen:
        for stream in tasks:
            assert isinstance(stream, StreamingGenerationTask), "ConfidenceStopController streams its tasks"
            self.stopped_early = yield from stream_until(stream, lambda s: self._low(s, threshold))
            if self.stopped_early:
                stream.metadata["stopped_low_confidence"] = True


class DeepConfOnlineController(_DeepConfBase):
    """Warm-up traces set a confidence threshold; the other traces stream and are cancelled
    when they fall below it. Cancelled traces do not vote."""

    kind = "deepconf_online"
    slots = {"sampler": Slot("trace_controller")}

    def __init__(
        self,
        num_traces: int = 16,
        *,
        warmup_traces: int = 4,
        confidence_percentile: float = 10.0,
        conf_group_size: int = 2048,
        streaming_step: int = 32,
        consensus: float | None = None,
        wave_size: int | None = None,
        num_logprobs: int = 5,
        confidence_policy: str = "lowest_group",
        vote_policy: str = "weighted",
        top_percent: float = 10.0,
        extractor: str | Extractor | None = "default",
        base_seed: int | None = None,
        trace_controller: Controller | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> None:
        super().__init__(
            num_traces,
            conf_group_size=conf_group_size,
            num_logprobs=num_logprobs,
            confidence_policy=confidence_policy,
            vote_policy=vote_policy,
            top_percent=top_percent,
            extractor=extractor,
            base_seed=base_seed,
            trace_controller=trace_controller,
            name=name,
            **sampling,
        )
        require(1 <= warmup_traces <= num_traces, "warmup_traces", "must be between 1 and num_traces")
        require(0 <= confidence_percentile <= 100, "confidence_percentile", "must be in [0, 100]")
        require(streaming_step >= 1, "streaming_step", "must be at least 1")
        require(consensus is None or 0 < consensus <= 1, "consensus", "must be in (0, 1]")
        require(wave_size is None or wave_size >= 1, "wave_size", "must be at least 1")
        self.consensus = consensus
        self.wave_size = wave_size
        self.warmup_traces = warmup_traces
        self.confidence_percentile = confidence_percentile
        self.streaming_step = streaming_step
        self.stop_controller = ConfidenceStopController(
            conf_group_size=conf_group_size, num_logprobs=num_logprobs, name=self.trace_controller.label
        )
        self.threshold: float | None = None

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        self._traces, self._output, self.threshold = [], None, None
        warm, warm_traces = yield from self._sample_traces(caller, self.warmup_traces)
        self._traces = list(warm_traces)
        if not warm_traces:
            fail_all(tasks, f"all {self.warmup_traces} warm-up traces failed", cause=warm[0])
            return
        self.threshold = percentile(
            [TRACE_CONFIDENCE["lowest_group"](t.conf, self.conf_group_size) for t in warm_traces],
            self.confidence_percentile,
        )
        emit_progress(method=self.label, phase="warmup_done", threshold=self.threshold)
        # Warm-up traces under the threshold do not vote either.
        self._traces = [t for t in warm_traces if self.trace_confidence(t, "lowest_group") >= self.threshold]
        start, stopped, reached = self.warmup_traces, 0, False
        while start < self.num_traces:
            if reached := self._agreed():
                break
            count = min(self.wave_size or self.num_traces, self.num_traces - start)
            rest = self._trace_tasks(
                caller, start, count, StreamingGenerationTask, streaming_step=self.streaming_step
            )
            start += count
            branches = [Isolated(self.stop_controller.clone()) for _ in rest]
            yield ParallelProcess(branches, [[t] for t in rest], [{"threshold": self.threshold} for _ in rest])
            kept = [t for t in rest if t.ok and not t.metadata.get("stopped_low_confidence")]
            stopped += sum(bool(t.metadata.get("stopped_low_confidence")) for t in rest)
            self._traces += [self._trace_of(t) for t in kept]
        if not self._traces:  # every trace fell below the threshold: vote over the warm-up anyway
            self._traces = warm_traces
        output = self._decide(
            self._traces,
            {
                "threshold": self.threshold,
                "stopped_early": stopped,
                "warmup_traces": len(warm_traces),
                "traces_started": start,
                "consensus_reached": reached,
            },
        )
        assert output is not None
        self._land(tasks, output)

    def _agreed(self) -> bool:
        """Whether the voting traces' leading answer already holds ``consensus`` of the
        confidence-weighted vote (never without ``consensus`` or without an answer). Traces
        that state no answer count against it: one answer beside two abstentions is no
        consensus."""
        if self.consensus is None:
            return False
        answers = [t.answer for t in self._traces]
        weights = [self.trace_confidence(t) for t in self._traces]
        result = vote(answers, weights)
        total = sum(weights)
        return result.key is not None and total > 0 and result.tally[result.key] / total >= self.consensus
