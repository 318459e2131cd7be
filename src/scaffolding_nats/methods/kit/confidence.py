"""DeepConf's confidence measures, computed from token log-probabilities.

Token confidence is ``-mean(logprob of the top-k alternatives)`` (high when the model is
sure: the alternatives are unlikely). Group confidence is the mean over a sliding window of
``group_size`` tokens; a trace's confidence is, by default, its lowest group confidence."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ...proto.tasks import TokenLogprob


def token_confidences(logprobs: Sequence[TokenLogprob], top_k: int | None = None) -> list[float]:
    out: list[float] = []
    for tok in logprobs:
        alts = [t.logprob for t in (tok.top or [])][: top_k or None]
        out.append(-sum(alts) / len(alts) if alts else -tok.logprob)
    return out


def group_confidences(conf: Sequence[float], group_size: int) -> list[float]:
    """Means over every full window of ``group_size`` tokens (one partial window if short)."""
    if not conf:
        return []
    if len(conf) <= group_size:
        return [sum(conf) / len(conf)]
    window = sum(conf[:group_size])
    out = [window / group_size]
    for i in range(group_size, len(conf)):
        window += conf[i] - conf[i - group_size]
        out.append(window / group_size)
    return out


def lowest_group(conf: Sequence[float], group_size: int) -> float:
    groups = group_confidences(conf, group_size)
    return min(groups) if groups else 0.0


def mean_confidence(conf: Sequence[float], group_size: int) -> float:
    return sum(conf) / len(conf) if conf else 0.0


def tail_confidence(conf: Sequence[float], group_size: int) -> float:
    """Mean over the last ``group_size`` tokens, where the answer is written."""
    tail = conf[-group_size:]
    return sum(tail) / len(tail) if tail else 0.0


def bottom_percent(conf: Sequence[float], group_size: int, percent: float = 10.0) -> float:
    """Mean of the lowest ``percent`` of group confidences."""
    groups = sorted(group_confidences(conf, group_size))
    if not groups:
        return 0.0
    n = max(1, int(len(groups) * percent / 100))
    return sum(groups[:n]) / n


TRACE_CONFIDENCE: dict[str, Callable[[Sequence[float], int], float]] = {
    "lowest_group": lowest_group,
    "mean": mean_confidence,
    "tail": tail_confidence,
    "bottom_window": bottom_percent,
}


def running_group_confidence(conf: Sequence[float], group_size: int) -> float | None:
    """Confidence of the latest full window, or ``None`` before a window is full."""
    if len(conf) < group_size:
        return None
    tail = conf[-group_size:]
    return sum(tail) / group_size


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100), as numpy's default."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * min(max(q, 0.0), 100.0) / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean_logprob_weight(task: Any) -> float | None:
    """``exp(mean token log-prob)`` of a trace (its per-token geometric-mean probability, in
    (0, 1]), or ``None`` when the backend returned no log-probs."""
    logprobs = getattr(task, "logprobs", None)
    if not logprobs:
        return None
    return math.exp(sum(t.logprob for t in logprobs) / len(logprobs))
