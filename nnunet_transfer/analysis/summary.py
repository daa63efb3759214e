"""Summaries and tests of similarity values: mean +- std, Welch's t-test, table cells.

Similarity values of network pairs are not independent samples (a network appears in several
pairs), so the p-values are those of the papers' protocol (Karimi et al. Tables 8-9), read as
indicative rather than exact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# Spread below which a sample of similarities counts as constant: float64 rounding of values
# near 1 leaves ~1e-15.
CONSTANT = 1e-12


@dataclass(frozen=True)
class Summary:
    """mean, sample standard deviation (ddof 1; NaN for fewer than 2 values) and count of the
    finite values (NaN values are left out)."""

    mean: float
    std: float
    n: int

    def cell(self, digits: int = 3) -> str:
        """'0.812 +- 0.034 (n=10)' in Markdown ('-' when there is no value)."""
        if self.n == 0:
            return "-"
        spread = "" if math.isnan(self.std) else f" ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}{spread} (n={self.n})"


def summarize(values: Sequence[float]) -> Summary:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Summary(float(array.mean()), std, int(array.size))


def welch_p(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) of two samples.

    NaN with fewer than 2 finite values on a side. Both samples constant (spread at most
    CONSTANT, e.g. similarities of 1 up to float64 rounding): scipy has no meaningful answer
    (its t would test the rounding noise); the p-value is 1 when the two constants are equal
    and 0 when they differ, the limit of the test as the spread goes to zero.
    """
    from scipy import stats

    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.ptp(a) <= CONSTANT and np.ptp(b) <= CONSTANT:
        return 1.0 if abs(a.mean() - b.mean()) <= CONSTANT else 0.0
    with warnings.catch_warnings():
        # precision-loss warnings for nearly constant samples; the p-value is still returned
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def p_cell(p: float, alpha: float) -> str:
    """'0.012*' (asterisk when p < alpha), '-' for NaN."""
    if math.isnan(p):
        return "-"
    text = f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"
    return text + ("*" if p < alpha else "")


def number_cell(number: float | None, digits: int = 3) -> str:
    """'0.812' ('-' for None or NaN)."""
    return "-" if number is None or (isinstance(number, float) and math.isnan(number)) \
        else f"{number:.{digits}f}"
