"""Seeded per-sample Gaussian noise: the same draw for the same seed on every device and process.

Training, rollouts, evaluation and the shapes world all draw their starting latents here: each
sample's noise comes from its own CPU generator seeded by that sample's seed, so a sample's noise
does not depend on the batch it is drawn in, the device, or the number of processes.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def derived_seed(*parts) -> int:
    """A 63-bit seed that depends only on ``parts`` (stable across processes and runs)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def seeded_noise(shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """One standard normal tensor of ``shape`` per seed, drawn on the CPU: ``[len(seeds), *shape]``."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def prompt_noise(policy, height: int, width: int, seeds: Sequence[int]) -> torch.Tensor:
    """One latent per seed for ``policy`` (anything with ``latent_shape(h, w)`` and ``device``) at
    ``height`` x ``width``, drawn on the CPU and moved to the policy's device: ``[N, C, h, w]``."""
    return seeded_noise(policy.latent_shape(height, width), seeds).to(policy.device)
