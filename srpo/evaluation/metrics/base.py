"""The metric interface: every evaluation metric scores images against prompts.

A :class:`Metric` maps ``images [B, 3, H, W]`` (floats in ``[0, 1]``) and ``B`` prompts to ``B``
scores (``score``). Metrics that run in another program (GenEval, DeQA) work on image files
instead and override :meth:`Metric.score_files`; the runner calls ``score`` batch by batch
while it generates and ``score_files`` once all images are on disk.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Sequence

import torch


class Metric(abc.ABC):
    """One evaluation metric. ``name`` is its config name, ``higher_is_better`` its direction."""

    name: str = "metric"
    higher_is_better: bool = True
    #: Metrics that need the whole image set on disk (external programs) set this.
    external: bool = False

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = int(batch_size)

    @abc.abstractmethod
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` and ``B`` prompts -> ``[B]`` float scores (CPU)."""

    @torch.no_grad()
    def score_batched(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """:meth:`score` in chunks of ``batch_size`` -> ``[N]`` on the CPU."""
        if images.shape[0] != len(prompts):
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts: give one prompt per image")
        parts = [self.score(images[i:i + self.batch_size], list(prompts[i:i + self.batch_size])).float().cpu()
                 for i in range(0, len(prompts), self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0)

    def score_files(self, paths: Sequence[Path], prompts: Sequence[str],
                    categories: Sequence[str] | None = None) -> list[float]:
        """Scores of image files (default: read them and call :meth:`score_batched`)."""
        from srpo.evaluation.images import load_image

        images = torch.stack([load_image(p) for p in paths])  # [N, 3, H, W]
        return self.score_batched(images, prompts).tolist()

    def to(self, device: str | torch.device) -> "Metric":
        return self


class ModuleMetric(Metric):
    """A metric backed by a frozen ``torch.nn.Module`` (``self.model``), moved with :meth:`to`."""

    model: torch.nn.Module

    def to(self, device: str | torch.device) -> "ModuleMetric":
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
