"""Evaluation metrics behind one interface (:class:`~srpo.evaluation.metrics.base.Metric`).

``load_metric(MetricConfig(...))`` returns a ready metric; heavy packages (open_clip,
transformers) are imported only when a metric that needs them is loaded.

=================  =========================================================  ====================
name               model                                                      score
=================  =========================================================  ====================
``hpsv2.1``        open_clip ViT-H-14 + HPS v2.1 state dict                   cosine
``pickscore``      transformers CLIP-H (PickScore_v1)                         logit_scale.exp()*cos
``clip_score``     transformers CLIP (openai/clip-vit-large-patch14)          max(100*cos, 0)
``sgp_hps``        HPS v2.1 with "Realistic photo" / "CG Render" prefixes      sigmoid(100 * diff)
``aesthetic_v2.5`` SigLIP so400m-patch14-384 + v2.5 MLP head                  ~1-10
``imagereward``    BLIP ViT-L + BERT cross-attention + MLP                    standardised reward
``geneval``        external command / its results.jsonl                       0/1 per image
``deqa``           external command / its result file                         ~1-5 per image
=================  =========================================================  ====================
"""

from __future__ import annotations

from pathlib import Path

from srpo.evaluation.metrics.base import Metric, ModuleMetric
from srpo.published import provide_builder
from srpo.rewards.scores import register_metric_scorer


def load_metric(cfg, device: str = "cpu") -> Metric:
    """The metric that ``cfg`` (a :class:`~srpo.evaluation.config.MetricConfig`) describes, on ``device``."""
    if cfg.name in ("hpsv2.1", "pickscore", "clip_score", "sgp_hps"):
        from srpo.evaluation.metrics.clip_metrics import load_clip_metric

        metric: Metric = load_clip_metric(cfg)
    elif cfg.name == "aesthetic_v2.5":
        from srpo.evaluation.metrics.aesthetic import load_aesthetic_metric

        metric = load_aesthetic_metric(cfg)
    elif cfg.name == "imagereward":
        from srpo.evaluation.metrics.imagereward import load_imagereward_metric

        metric = load_imagereward_metric(cfg)
    elif cfg.name in ("geneval", "deqa"):
        from srpo.evaluation.metrics.external import load_external_metric

        metric = load_external_metric(cfg)
    else:  # MetricConfig validates names
        raise ValueError(f"unknown metric {cfg.name!r}")
    return metric.to(device)


def tiny_metric_folder(*, family: str | None, seed: int = 0) -> Path:
    """The folder of ``builtin:tiny`` for metric ``family`` (imagereward, aesthetic_v2.5): a seeded tiny
    random model, built on first use (see :mod:`srpo.published`). The CLIP metrics load rewards, whose
    ``builtin:tiny`` the reward registry resolves."""
    if family == "imagereward":
        from srpo.evaluation.metrics.imagereward import build_tiny_imagereward

        return build_tiny_imagereward(seed)
    if family == "aesthetic_v2.5":
        from srpo.rewards.aesthetic_reward import build_tiny_aesthetic

        return build_tiny_aesthetic(seed)
    raise ValueError(f"metric {family!r} has no builtin:tiny folder of its own: only imagereward and aesthetic_v2.5 do")


def metric_score_fn(config: dict, device: str = "cpu"):
    """A score-only reward's function for an evaluation metric: ``fn(images, prompts) -> [B]``, no grad.

    ``config`` is the metric's config as under ``metrics:`` (validated here: a bad field is named).
    External metrics (GenEval, DeQA) run a program over saved images and cannot score a batch.
    """
    import torch

    from srpo.evaluation.config import EXTERNAL_METRICS, MetricConfig

    cfg = MetricConfig(**config)
    if cfg.name in EXTERNAL_METRICS:
        raise ValueError(f"reward.metric {cfg.name!r} is an external program over saved images: it cannot score a "
                         "training batch; use a model metric (hpsv2.1, pickscore, clip_score, aesthetic_v2.5, "
                         "imagereward) or a score function")
    metric = load_metric(cfg, device=device)

    @torch.no_grad()
    def score(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return metric.score(images, prompts)
    return score


provide_builder("metric", "tiny", tiny_metric_folder)
register_metric_scorer(metric_score_fn)  # reward: {name: score, metric: {...}} loads through the rewards layer

__all__ = ["Metric", "ModuleMetric", "load_metric", "metric_score_fn", "tiny_metric_folder"]
