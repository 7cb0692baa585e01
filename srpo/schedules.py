"""Noise schedules: the shifted sigma schedule, the fine training grid, discounts and k-schedules.

Convention (diffusers flow matching): ``x_sigma = (1 - sigma) * x0 + sigma * eps`` with sigma in
[0, 1]; sigma = 1 is pure noise. FLUX samples on a *shifted* schedule that spends more steps at
high noise: ``shift(t) = s * t / (1 + (s - 1) * t)``.
"""

from __future__ import annotations

import torch

MAX_TRAIN_SIGMA = 0.99  # never train above this: x0hat divides by (1 - t)


def shift_sigma(t: torch.Tensor, shift: float = 3.0) -> torch.Tensor:
    """Map unshifted times ``t`` in [0, 1] to shifted sigmas: ``s*t / (1 + (s-1)*t)``."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def sigma_schedule(num_steps: int, shift: float = 3.0) -> torch.Tensor:
    """Sampling sigmas from 1 down to 0, shifted: a tensor of ``num_steps + 1`` values.

    ``sigmas[i]`` is the noise level before step i; the last entry is 0 (the clean image).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)  # [N+1]
    return shift_sigma(t, shift).to(torch.float32)


def training_grid(
    start_index: int = 5,
    end_index: int = 25,
    num_steps: int = 50,
    shift: float = 3.0,
    grid_size: int = 201,
) -> torch.Tensor:
    """The fine grid of training noise levels between two points of the shifted schedule.

    Defaults follow the authors: indices 5..25 of the 50-step shifted schedule, i.e. sigma from
    about 0.964 down to 0.750. Returns ``grid_size`` sigmas in decreasing order.
    """
    if not 0 <= start_index < end_index <= num_steps:
        raise ValueError(f"need 0 <= start_index < end_index <= num_steps, got "
                         f"{start_index}, {end_index}, {num_steps}")
    sigmas = sigma_schedule(num_steps, shift).double()
    hi, lo = sigmas[start_index], sigmas[end_index]
    return torch.linspace(float(hi), float(lo), grid_size, dtype=torch.float64).float()  # [G]


def default_step_size(grid: torch.Tensor, fraction: float = 0.1) -> float:
    """The model step ``d_sigma``: a fraction of the grid's span (authors: a tenth, about 0.02)."""
    return float(fraction * (grid.max() - grid.min()))


def grid_position(sigma: torch.Tensor | float, sigma_lo: float, sigma_hi: float) -> torch.Tensor:
    """Where ``sigma`` sits on the training grid: 0 at its lowest (latest) level, 1 at its highest.

    The authors index their discounts and k-schedules by a timestep counted from the clean end of
    the grid; this is that index over the grid's length. Clamped to [0, 1].
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return ((sigma - sigma_lo) / max(sigma_hi - sigma_lo, 1e-12)).clamp(0.0, 1.0)


def linear_discount(sigma: torch.Tensor, sigma_lo: float, sigma_hi: float, floor: float = 0.0) -> torch.Tensor:
    """Multiplicative discount ``lambda(sigma)`` (paper eq. 3) that down-weights late levels.

    1 at ``sigma_hi`` (early, high noise) falling linearly to ``floor`` at ``sigma_lo`` (late,
    low noise), where reward hacking happens.
    """
    return (floor + (1.0 - floor) * grid_position(sigma, sigma_lo, sigma_hi)).float()


def shifted_linspace_discount(sigma: torch.Tensor, sigma_lo: float, sigma_hi: float, shift: float = 3.0,
                              floor: float = 0.0) -> torch.Tensor:
    """The authors' Qwen-Image discount: ``shift(position)`` of each level on the grid, scaled to [floor, 1].

    Their ``sd3_time_shift(3, linspace(0, 1, L + 1))[index]`` with the index counted from the clean
    end (``floor = 0``): 1 at the highest level, 0 at the lowest, and kept high for longer than
    :func:`linear_discount`.
    """
    return (floor + (1.0 - floor) * shift_sigma(grid_position(sigma, sigma_lo, sigma_hi), shift)).float()


def linear_k(sigma: float, sigma_lo: float, sigma_hi: float, k_start: float, k_end: float) -> float:
    """Additive ("absolute term") weight k at noise level ``sigma`` of a grid over [sigma_lo, sigma_hi].

    Linear in the authors' timestep index, which counts from the clean end: ``k_start`` at the
    lowest level, ``k_end`` at the highest (HPS: denoise 0.10 -> 0.25, inversion 0.30 -> 0.01, so
    late levels get the smallest positive push and the largest pull away from the negative words).
    """
    return float(k_start + (k_end - k_start) * grid_position(sigma, sigma_lo, sigma_hi))
