"""Losses on a reward: maximise r, either plainly or through a hinge."""

from __future__ import annotations

import torch


def linear_loss(reward: torch.Tensor) -> torch.Tensor:
    """``-r`` averaged over the batch."""
    return -reward.mean()


def hinge_loss(reward: torch.Tensor, tau: float = 0.7) -> torch.Tensor:
    """``relu(tau - r)`` averaged: no gradient once a sample's reward exceeds ``tau``.

    With CLIP-like rewards far below tau = 0.7 this is effectively ``tau - r`` (the authors').
    """
    return torch.relu(tau - reward).mean()


def reward_loss(reward: torch.Tensor, kind: str = "hinge", tau: float = 0.7) -> torch.Tensor:
    if kind == "hinge":
        return hinge_loss(reward, tau)
    if kind == "linear":
        return linear_loss(reward)
    raise ValueError(f"unknown loss {kind!r}: use 'hinge' or 'linear'")
