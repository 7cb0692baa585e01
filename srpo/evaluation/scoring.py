"""Evaluation seeds and in-memory helpers (the runner itself is :mod:`srpo.evaluation.runner`).

Generation follows the paper's protocol: one image per prompt, seed ``42 + index * 1000``,
deterministic Euler sampling on the shifted schedule with the evaluation guidance. Every model
sees the same prompts and the same initial noise, so differences come from the weights only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from srpo.config import EvalConfig
from srpo.models.flux import FluxPolicy
from srpo.rewards.base import RewardModel
from srpo.training.rollouts import prompt_noise

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """Mean and per-prompt scores of each model under each metric."""

    prompts: list[str]
    means: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> mean
    per_prompt: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # model -> metric -> [N]

    def delta(self, metric: str, model: str = "tuned", base: str = "base") -> float:
        return self.means[model][metric] - self.means[base][metric]

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "means": self.means, "per_prompt": self.per_prompt}


def eval_seeds(num_prompts: int, cfg: EvalConfig) -> list[int]:
    """The paper's per-prompt seeds: ``seed + index * seed_stride``."""
    return [cfg.seed + i * cfg.seed_stride for i in range(num_prompts)]


@torch.no_grad()
def generate_images(policy: FluxPolicy, prompts: Sequence[str], cfg: EvalConfig, height: int, width: int,
                    batch_size: int = 4) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1], one per prompt, from the per-prompt seeds."""
    eps = prompt_noise(policy, height, width, eval_seeds(len(prompts), cfg))  # [N,C,h,w]
    images = []
    for i in range(0, len(prompts), batch_size):
        cond = policy.encode_prompts(prompts[i:i + batch_size])
        x0 = policy.rollout(cond, eps[i:i + batch_size], cfg.num_steps, cfg.shift, cfg.guidance)
        images.append(policy.decode(x0).cpu())
    return torch.cat(images)


@torch.no_grad()
def score_images(images: torch.Tensor, prompts: Sequence[str], rewards: Mapping[str, RewardModel],
                 batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Each metric's score [N] of ``images`` [N,3,H,W] against ``prompts``."""
    scores = {}
    for name, reward in rewards.items():
        parts = [reward.score(images[i:i + batch_size].to(reward.device), list(prompts[i:i + batch_size])).cpu()
                 for i in range(0, len(prompts), batch_size)]
        scores[name] = torch.cat(parts).float()
    return scores


def evaluate_models(load_policy: Mapping[str, Callable[[], FluxPolicy]], prompts: Sequence[str],
                    rewards: Mapping[str, RewardModel], cfg: EvalConfig, height: int, width: int) -> EvalReport:
    """Generate with each model and score with every reward: the in-memory view of
    :func:`srpo.evaluation.runner.run_evaluation` (which this calls, in a temporary folder)."""
    import tempfile
    from pathlib import Path

    from srpo.evaluation.benchmarks import Benchmark
    from srpo.evaluation.config import EvalReportConfig
    from srpo.evaluation.metrics.clip_metrics import RewardScoreMetric
    from srpo.evaluation.runner import run_evaluation

    metrics = {name: RewardScoreMetric(name, reward) for name, reward in rewards.items()}
    bench = Benchmark(list(prompts), ["all"] * len(prompts))
    with tempfile.TemporaryDirectory(prefix="srpo-eval-") as tmp:
        results = run_evaluation(load_policy, bench, metrics, cfg, EvalReportConfig(), height, width, Path(tmp))
        data = results.read_json()
    report = EvalReport(prompts=[it["prompt"] for it in data["items"]])
    report.per_prompt = data["scores"]
    report.means = {m: {k: float(sum(v) / len(v)) for k, v in s.items()} for m, s in data["scores"].items()}
    return report
