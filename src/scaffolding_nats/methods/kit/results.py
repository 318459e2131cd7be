"""Typed results of the methods: what a method decided (which sample, by which votes or
scores), instead of a free-form dict. On the wire they travel as ``JobResult.metadata``
(``to_metadata()``), so the contract is unchanged."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MethodResult:
    """Base of every method's result: the chosen sample's ``index`` (``None`` when the method
    does not choose among samples) and ``fallback``, set when it could not decide normally."""

    index: int | None = None
    fallback: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        """The wire form: every field that is set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class VoteOutcome(MethodResult):
    """A vote: each sample's extracted answer (``None``: failed or no answer), the tally by
    normalised answer and, for weighted votes, each sample's weight."""

    num_samples: int = 0
    num_succeeded: int = 0
    num_answered: int = 0
    votes: dict[str, float] = field(default_factory=dict)
    answers: list[str | None] | None = None
    weights: list[float | None] | None = None


@dataclass
class ScoredOutcome(MethodResult):
    """A choice by reward: every sample's score (``None`` for failed samples) and the winner's."""

    num_samples: int = 0
    num_succeeded: int = 0
    score: float | None = None
    scores: list[float | None] | None = None


@dataclass
class ConfidenceVoteOutcome(VoteOutcome):
    """DeepConf: a vote under ``vote_policy`` over traces weighted or filtered by confidence."""

    num_traces: int = 0
    vote_policy: str | None = None
    answers_by_policy: dict[str, str | None] | None = None
    trace_confidences: list[float] | None = None
    num_failed: int | None = None
    threshold: float | None = None
    stopped_early: int | None = None
    warmup_traces: int | None = None
    traces_started: int | None = None
    consensus_reached: bool | None = None


@dataclass
class EarlyExitOutcome(MethodResult):
    """Dynasor-CoT: whether the trace was stopped early, after how many chunks and probes."""

    early_exit: bool = False
    chunks: int = 0
    probes: int = 0


@dataclass
class SearchOutcome(MethodResult):
    """Beam search, MCTS, tree of thoughts: the chosen path's score (or MCTS value) and shape."""

    score: float | None = None
    steps: int | None = None
    finished: bool | None = None
    beams: list[dict[str, Any]] | None = None
    value: float | None = None
    visits: int | None = None
    depth: int | None = None
    iterations: int | None = None
    nodes: int | None = None
    completed: bool | None = None
    strategy: str | None = None


@dataclass
class AgentOutcome(MethodResult):
    """Tool agent: turns taken, tool calls made, why it stopped, and the conversation."""

    turns: int = 0
    tool_calls: int = 0
    stop: str | None = None
    messages: list[dict[str, Any]] | None = None
