"""Metrics over CLIP-like reward models: HPSv2.1, PickScore, CLIP score and SGP-HPS.

They reuse the reward adapters of :mod:`srpo.rewards` (same loaders, same in-graph
preprocessing), and differ only in how the cosine ``c = <f_img(x), f_txt(p)>`` becomes a score:

============  ==========================================================================
hpsv2.1       ``c`` (HPS v2.1's own score: cosine, no logit scale)
pickscore     ``logit_scale.exp() * c`` (PickScore's raw score, ~22-23 for FLUX.1-dev)
clip_score    ``max(100 * c, 0)`` (CLIPScore as torchmetrics defines it)
sgp_hps       ``sigmoid(T * (c(x, "Realistic photo. " + p) - c(x, "CG Render. " + p)))``, T = 100
============  ==========================================================================

**SGP-HPS, exactly.** The paper defines SGP-HPS as the difference between HPSv2.1 scores of
the prompt prefixed with "Realistic photo" (C1) and with "CG Render" (C2), and reports values
of 0.41-0.51. A raw HPS difference is of the order of 0.001-0.01 and can be negative, so we read
it as a two-way softmax over the two prefixed prompts, i.e. the probability that the image is a
realistic photo rather than a CG render::

    d(x, p) = <f_img(x), f_txt("Realistic photo. " + p)> - <f_img(x), f_txt("CG Render. " + p)>
    SGP-HPS(x, p) = sigmoid(T * d(x, p)),    T = 100 (CLIP's logit scale)

averaged over images. Prefixes are joined the way SRPO's control words are (``"<word>. <prompt>"``);
the prefixes and ``T`` are configurable (``positive_prefix``, ``negative_prefix``,
``temperature``). Values above 0.5 mean the reward reads the image as more photo than render.
"""

from __future__ import annotations

from typing import Sequence

import torch

from srpo.evaluation.metrics.base import ModuleMetric
from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.base import RewardModel

SGP_POSITIVE = "Realistic photo"
SGP_NEGATIVE = "CG Render"
SGP_TEMPERATURE = 100.0
#: transformers CLIP used by ``clip_score`` when no checkpoint is given (torchmetrics' default).
CLIP_SCORE_DEFAULT = "openai/clip-vit-large-patch14"


def control_prompt(prefix: str, prompt: str) -> str:
    """``"<prefix>. <prompt>"``, as SRPO prepends control words on the reward's text side."""
    return f"{prefix}. {prompt}"


class CosineMetric(ModuleMetric):
    """``clamp(scale * cos(image, prompt), min=floor)`` of a :class:`RewardModel`."""

    def __init__(self, name: str, reward: RewardModel, *, scale: float = 1.0, floor: float | None = None,
                 batch_size: int = 16) -> None:
        super().__init__(batch_size)
        self.name, self.model, self.scale, self.floor = name, reward, float(scale), floor

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        img = self.model.image_features(images)  # [B, D]
        txt = self.model.text_features(list(prompts))  # [B, D]
        out = self.scale * (img * txt).sum(-1)  # [B]
        return out if self.floor is None else out.clamp(min=self.floor)


class SGPHPSMetric(ModuleMetric):
    """``sigmoid(T * (cos(x, pos + p) - cos(x, neg + p)))`` on the HPS model (see the module doc)."""

    name = "sgp_hps"

    def __init__(self, reward: RewardModel, *, positive: str = SGP_POSITIVE, negative: str = SGP_NEGATIVE,
                 temperature: float = SGP_TEMPERATURE, batch_size: int = 16) -> None:
        super().__init__(batch_size)
        self.model, self.positive, self.negative, self.temperature = reward, positive, negative, float(temperature)

    def difference(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``d(x, p)`` = HPS with the positive prefix minus HPS with the negative prefix: ``[B]``."""
        img = self.model.image_features(images)  # [B, D]
        pos = self.model.text_features([control_prompt(self.positive, p) for p in prompts])  # [B, D]
        neg = self.model.text_features([control_prompt(self.negative, p) for p in prompts])  # [B, D]
        return (img * (pos - neg)).sum(-1)  # [B]

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return torch.sigmoid(self.temperature * self.difference(images, prompts))  # [B]


def load_clip_metric(cfg) -> ModuleMetric:
    """The metric that ``cfg`` (a :class:`~srpo.evaluation.config.MetricConfig`) names."""
    if cfg.name in ("hpsv2.1", "sgp_hps"):
        if cfg.checkpoint is None:
            raise ValueError(f"metric {cfg.name!r} needs the HPS v2.1 checkpoint: give `checkpoint` as the path "
                             "or s3:// URL of HPS_v2.1_compressed.pt, or 'builtin:tiny' for a tiny random model")
        kwargs = {"architecture": cfg.architecture} if cfg.architecture else {}
        reward = load_reward(RewardConfig(name="hpsv2.1", checkpoint=cfg.checkpoint, seed=cfg.seed, **kwargs))
        if cfg.name == "hpsv2.1":
            return CosineMetric("hpsv2.1", reward, batch_size=cfg.batch_size)
        return SGPHPSMetric(reward, positive=cfg.positive_prefix or SGP_POSITIVE,
                            negative=cfg.negative_prefix or SGP_NEGATIVE,
                            temperature=cfg.temperature or SGP_TEMPERATURE, batch_size=cfg.batch_size)
    if cfg.name == "pickscore":
        reward = load_reward(RewardConfig(name="pickscore", checkpoint=cfg.checkpoint, seed=cfg.seed,
                                          processor_path=cfg.processor))
        return CosineMetric("pickscore", reward, scale=reward.logit_scale, batch_size=cfg.batch_size)
    if cfg.name == "clip_score":
        reward = load_reward(RewardConfig(name="hf_clip", checkpoint=cfg.checkpoint or CLIP_SCORE_DEFAULT,
                                          seed=cfg.seed, processor_path=cfg.processor))
        return CosineMetric("clip_score", reward, scale=100.0, floor=0.0, batch_size=cfg.batch_size)
    raise ValueError(f"{cfg.name!r} is not a CLIP-like metric")


class RewardScoreMetric(ModuleMetric):
    """A training reward used as a metric: ``reward.score(images, prompts)`` (its own scale)."""

    def __init__(self, name: str, reward: RewardModel, batch_size: int = 16) -> None:
        super().__init__(batch_size)
        self.name, self.model = name, reward

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.model.score(images.to(self.device), list(prompts))  # [B]
