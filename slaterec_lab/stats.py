"""Across-seed statistics of Table 2: Student-t intervals and Welch's t-test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass
class SeedSummary:
    mean: float
    half_width: float  # of the 95 % Student-t interval (nan with one seed)
    n: int

    @property
    def ci95(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width


def summarise(values: Sequence[float]) -> SeedSummary:
    """Mean over seeds with the 95 % Student-t interval (n - 1 degrees of freedom)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return SeedSummary(mean, float("nan"), 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return SeedSummary(mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n), n)


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (None when either side has fewer than 2 seeds)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):  # no spread on either side (a deterministic policy)
        return 1.0 if a[0] == b[0] else 0.0
    import warnings

    with warnings.catch_warnings():  # nearly-constant samples: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
