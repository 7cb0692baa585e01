"""Evaluation seeds (the runner itself is :mod:`srpo.evaluation.runner`).

Generation follows the paper's protocol: one image per prompt, seed ``42 + index * 1000``
where ``index`` is the prompt's index in the full benchmark (kept through ``categories`` /
``per_category`` subsets, see :class:`srpo.evaluation.benchmarks.Benchmark`), deterministic
Euler sampling on the shifted schedule with the evaluation guidance. Every model sees the same
prompts and the same initial noise, so differences come from the weights only.
"""

from __future__ import annotations

from typing import Sequence

from srpo.evaluation.config import EvalConfig


def eval_seeds(indices: Sequence[int], cfg: EvalConfig) -> list[int]:
    """The paper's per-prompt seeds ``seed + index * seed_stride``, one per benchmark index."""
    return [cfg.seed + int(i) * cfg.seed_stride for i in indices]
