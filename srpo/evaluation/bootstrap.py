"""Percentile bootstrap confidence intervals (numpy only).

Scores are resampled *by prompt*: every model saw the same prompts with the same seeds, so a
model's mean and a difference between two models are both resampled with the same prompt
indices (a paired bootstrap). Human ratings are resampled by prompt too (cluster bootstrap: a
prompt's ratings by all raters stay together). Strata (categories) are resampled separately,
so the macro average over categories keeps each category's weight.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def resample_indices(groups: Sequence[str] | None, n: int, samples: int, seed: int) -> np.ndarray:
    """``[samples, n]`` indices drawn with replacement, within each group when ``groups`` is given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.integers(0, n, size=(samples, n))
    groups = np.asarray(groups)
    out = np.empty((samples, n), dtype=np.int64)
    for g in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == g)
        cols = members  # the resampled members take the group's own positions
        out[:, cols] = members[rng.integers(0, len(members), size=(samples, len(members)))]
    return out


def percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap statistics ``stats [samples]``."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def macro_mean(values: np.ndarray, groups: Sequence[str] | None) -> float:
    """Mean of per-group means (the plain mean without groups)."""
    values = np.asarray(values, dtype=float)
    if groups is None:
        return float(values.mean())
    groups = np.asarray(groups)
    return float(np.mean([values[groups == g].mean() for g in dict.fromkeys(groups.tolist())]))


def bootstrap_ci(values: Sequence[float], *, groups: Sequence[str] | None = None, samples: int = 1000,
                 confidence: float = 0.95, seed: int = 0,
                 statistic: Callable[[np.ndarray], float] | None = None) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of the (macro) mean of ``values``, resampling within ``groups``.

    ``values`` may be ``[N]`` or ``[N, ...]`` (a row per prompt); ``statistic`` maps a resampled
    array to a number (default: the macro mean over ``groups``).
    """
    arr = np.asarray(values, dtype=float)
    if arr.shape[0] == 0:
        return float("nan"), float("nan"), float("nan")
    stat = statistic or (lambda a: macro_mean(a, groups))
    estimate = stat(arr)
    if arr.shape[0] == 1:
        return estimate, estimate, estimate
    idx = resample_indices(groups, arr.shape[0], samples, seed)  # [S, N]
    if statistic is None:  # vectorised (macro) mean
        res = arr[idx]  # [S, N, ...]
        if groups is None:
            stats = res.mean(axis=1)
        else:
            g = np.asarray(groups)
            stats = np.mean([res[:, g == name].mean(axis=1) for name in dict.fromkeys(g.tolist())], axis=0)
    else:
        stats = np.array([stat(arr[row]) for row in idx])
    lo, hi = percentile_interval(stats, confidence)
    return estimate, lo, hi
