"""Evaluation seeds (the runner itself is :mod:`srpo.evaluation.runner`).

Generation follows the paper's protocol: one image per prompt, seed ``42 + index * 1000``,
deterministic Euler sampling on the shifted schedule with the evaluation guidance. Every model
sees the same prompts and the same initial noise, so differences come from the weights only.
"""

from __future__ import annotations

from srpo.config import EvalConfig


def eval_seeds(num_prompts: int, cfg: EvalConfig) -> list[int]:
    """The paper's per-prompt seeds: ``seed + index * seed_stride``."""
    return [cfg.seed + i * cfg.seed_stride for i in range(num_prompts)]
