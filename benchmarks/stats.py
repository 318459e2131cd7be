"""Small-sample statistics for method comparisons: Wilson intervals for an accuracy and the
exact McNemar test for two methods scored on the same problems (no scipy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval: honest at small n and near 0 or 1, unlike p ± z·se."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Paired:
    """Two methods on the same problems: ``only_a`` problems only A got right, ``only_b`` only
    B, and the exact two-sided McNemar p-value of that split."""

    n: int
    only_a: int
    only_b: int
    p_value: float

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A."""
        return (self.only_b - self.only_a) / self.n if self.n else 0.0


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs under Binomial(b + c, 1/2)."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return min(1.0, 2 * tail)


def paired(a: Sequence[bool], b: Sequence[bool]) -> Paired:
    """Compare B against A on the same problems (equal-length, same order)."""
    if len(a) != len(b):
        raise ValueError("paired comparison needs the same problems for both methods")
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    return Paired(len(a), only_a, only_b, mcnemar_exact(only_a, only_b))
