"""Krippendorff's alpha for inter-rater agreement (nominal, ordinal, interval), numpy only.

``alpha = 1 - D_o / D_e`` from the coincidence matrix of pairable values (Krippendorff, 2011,
"Computing Krippendorff's Alpha-Reliability"): each unit with ``m_u >= 2`` values contributes
``1 / (m_u - 1)`` for every ordered pair of its values; units with fewer than two values are not
pairable and are dropped. Difference functions:

- nominal: ``0`` if ``c == k`` else ``1``;
- interval: ``(c - k) ** 2``;
- ordinal: ``(sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2`` over the sorted values (``n_g`` =
  how often value ``g`` occurs among pairable values).

alpha is 1 for perfect agreement, about 0 for chance, and undefined (``nan``) when every
pairable value is the same (no expected disagreement).
"""

from __future__ import annotations

from typing import Hashable, Literal, Sequence

import numpy as np

Level = Literal["nominal", "ordinal", "interval"]


def coincidences(units: Sequence[Sequence[Hashable]]) -> tuple[list, np.ndarray]:
    """``(values, o)``: the sorted distinct values and the coincidence matrix ``o [V, V]``."""
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in pairable:
        counts = np.zeros(len(values))
        for v in u:
            counts[index[v]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (len(u) - 1)
    return values, o


def krippendorff_alpha(units: Sequence[Sequence[Hashable]], level: Level = "nominal") -> float:
    """Krippendorff's alpha of ``units`` (each the list of values the raters gave one unit)."""
    values, o = coincidences(units)
    if len(values) < 2:
        return float("nan")
    n_c = o.sum(axis=1)
    n = n_c.sum()
    v = np.asarray(values, dtype=float) if level != "nominal" else None
    size = len(values)
    delta = np.zeros((size, size))
    for c in range(size):
        for k in range(size):
            if level == "nominal":
                delta[c, k] = 0.0 if c == k else 1.0
            elif level == "interval":
                delta[c, k] = (v[c] - v[k]) ** 2
            elif level == "ordinal":
                lo, hi = min(c, k), max(c, k)
                delta[c, k] = (n_c[lo:hi + 1].sum() - (n_c[lo] + n_c[hi]) / 2.0) ** 2
            else:
                raise ValueError(f"unknown level {level!r}: use 'nominal', 'ordinal' or 'interval'")
    d_o = (o * delta).sum() / n
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return float("nan") if d_e == 0 else float(1.0 - d_o / d_e)
