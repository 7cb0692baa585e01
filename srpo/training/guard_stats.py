"""Standard errors of the guard's metrics over its images (torch-free arithmetic on per-image lists).

A check measures each metric on n images; its value is the mean over the images where the metric
applies (NaN: not applicable). Shares (every per-image value 0 or 1) get the binomial standard
error ``sqrt(p (1 - p) / n)``; other metrics the standard error of the mean over images; a drift
from the base model's value is measured on the same prompts and seeds, so its standard error is
that of the per-image differences (paired), which cancels what the images share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Estimate:
    """One metric at one check: the mean, its standard error, the images it was measured on, and the
    standard error of its change from the base check (paired over images; the share's binomial one)."""

    value: float
    se: float
    n: int
    share: bool
    change_se: float


def kept(values: Sequence[float]) -> list[float]:
    """The values where the metric applies (NaN dropped)."""
    return [v for v in values if not math.isnan(v)]


def is_share(values: Sequence[float]) -> bool:
    """Every applicable per-image value is 0 or 1: the metric is a share (binomial errors)."""
    vals = kept(values)
    return bool(vals) and all(v in (0.0, 1.0) for v in vals)


def sample_sd(values: Sequence[float]) -> float:
    """The per-image standard deviation (binomial ``sqrt(p (1 - p))`` for a share; else n - 1 in the denominator)."""
    vals = kept(values)
    if not vals:
        return math.nan
    mean = sum(vals) / len(vals)
    if is_share(vals):
        return math.sqrt(mean * (1 - mean))
    return _sd(vals, mean)


def _sd(vals: list[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0


def estimate(values: Sequence[float], base: Optional[Sequence[float]] = None) -> Estimate:
    """The mean of ``values`` (per image) with its standard errors; ``base``: the base check's values, image by image."""
    vals = kept(values)
    n = len(vals)
    if not n:
        return Estimate(math.nan, math.nan, 0, False, math.nan)
    share = is_share(vals)
    mean = sum(vals) / n
    se = sample_sd(vals) / math.sqrt(n)
    change_se = se
    if not share and base is not None and len(base) == len(values):
        diffs = [v - b for v, b in zip(values, base) if not (math.isnan(v) or math.isnan(b))]
        if diffs:
            change_se = _sd(diffs, sum(diffs) / len(diffs)) / math.sqrt(len(diffs))
    return Estimate(mean, se, n, share, change_se)
