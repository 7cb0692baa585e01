"""Aesthetic predictor v2.5 as a metric (the model lives in :mod:`srpo.rewards.aesthetic_reward`)."""

from __future__ import annotations

from typing import Sequence

import torch

from srpo.evaluation.metrics.base import ModuleMetric
from srpo.rewards.aesthetic_reward import (DEFAULT_ENCODER, HEAD_FILE, SIGLIP_MEAN, SIGLIP_STD,  # noqa: F401
                                           AestheticHead, AestheticPredictor, build_tiny_aesthetic,
                                           load_aesthetic_predictor, load_head_state, load_siglip_vision,
                                           save_aesthetic_checkpoint, siglip_preprocess, tiny_siglip_config)


class AestheticMetric(ModuleMetric):
    """Aesthetic predictor v2.5 behind the metric interface."""

    name = "aesthetic_v2.5"

    def __init__(self, model: AestheticPredictor, *, image_size: int, mean: Sequence[float] = SIGLIP_MEAN,
                 std: Sequence[float] = SIGLIP_STD, batch_size: int = 16) -> None:
        super().__init__(batch_size)
        self.model = model.eval().requires_grad_(False)
        self.image_size, self.mean, self.std = int(image_size), tuple(mean), tuple(std)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> SigLIP input ``[B, 3, S, S]`` (resize, no crop)."""
        x = images.to(device=self.device, dtype=next(self.model.parameters()).dtype)
        return siglip_preprocess(x, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.model(self.preprocess(images)).float()  # [B]


def load_aesthetic_metric(cfg) -> AestheticMetric:
    """Aesthetic v2.5 from ``cfg.encoder`` (SigLIP) and ``cfg.checkpoint`` (the head's state dict)."""
    model, size, mean, std = load_aesthetic_predictor(cfg.checkpoint, cfg.encoder, cfg.seed, what="metric")
    return AestheticMetric(model, image_size=size, mean=mean, std=std, batch_size=cfg.batch_size)
