"""MixGRPO (Li et al., arXiv 2507.21802) and Flow-GRPO-Fast: SDE and GRPO only inside a window of steps.

A rollout is the ODE everywhere except a *window* of consecutive sampler steps, where it is the SDE
of :mod:`srpo.grpo` (same marginals, a Gaussian step with a log-probability). Only the window's steps
are trained, so an update costs ``window`` model calls with grad instead of N, and the ODE steps
outside it make the images sharper and the advantages less noisy.

- MixGRPO's *sliding* window: ``size`` steps starting at ``start``; every ``shift_every`` updates the
  start moves ``stride`` steps towards t = 0, and (``roll_back``) starts again at step 0 once the
  window would pass the last stochastic step (the paper's progressive strategy, defaults 4 steps,
  25 updates, stride 1 of 25 sampler steps).
- Flow-GRPO-Fast's *branch*: each rollout batch draws the window's start uniformly from
  ``[lo, hi - size]`` (defaults 2 steps within the first half of the steps): the trajectory is an
  ODE that branches into the SDE at 1-2 random steps.

The sampler is :func:`srpo.grpo.sde_sample` with the SDE's ``sigma_t`` zeroed outside the window
(:func:`window_stds`): a zero ``sigma_t`` step is the ODE's Euler step with log-probability 0.
Everything here imports only torch.
"""

from __future__ import annotations

from typing import Sequence

import torch


def window_start(update: int, size: int, shift_every: int, stride: int, num_candidates: int,
                 roll_back: bool = True) -> int:
    """The sliding window's first candidate index after ``update`` optimizer updates.

    The start moves ``stride`` every ``shift_every`` updates over ``0 .. num_candidates - size`` (the
    window stays whole); once the next move would pass the last whole-window start it rolls back to 0
    (``roll_back``) or stays at the last start.
    """
    if not 1 <= size <= num_candidates:
        raise ValueError(f"train.mixgrpo.window_size {size} must be in [1, {num_candidates}] (the stochastic "
                         "sampler steps: all but the step into t = 0)")
    if shift_every < 1 or stride < 1:
        raise ValueError(f"train.mixgrpo.shift_every {shift_every} and stride {stride} must be >= 1")
    last = num_candidates - size  # the last whole-window start
    shifts = update // shift_every
    if not roll_back:
        return min(shifts * stride, last)
    return (shifts % (last // stride + 1)) * stride  # 0, s, 2s, ... <= last, then 0 again


def sliding_window(update: int, candidates: Sequence[int], size: int, shift_every: int, stride: int,
                   roll_back: bool = True) -> list[int]:
    """The ``size`` consecutive candidate steps (:func:`srpo.grpo.stochastic_steps`) that are SDE and
    trained at this update."""
    candidates = list(candidates)
    start = window_start(update, size, shift_every, stride, len(candidates), roll_back)
    return candidates[start:start + size]


def branch_window(candidates: Sequence[int], size: int, lo: int, hi: int,
                  generator: torch.Generator | None = None) -> list[int]:
    """Flow-GRPO-Fast's window: ``size`` consecutive candidate steps whose start is uniform in
    ``[lo, hi - size]`` (positions among ``candidates``), drawn afresh for each rollout batch."""
    candidates = list(candidates)
    hi = min(hi, len(candidates))
    if not 0 <= lo <= hi - size:
        raise ValueError(f"train.mixgrpo.branch_range [{lo}, {hi}] (clipped to the {len(candidates)} stochastic "
                         f"steps) does not hold a window of {size} steps: widen the range or shrink window_size")
    start = int(torch.randint(lo, hi - size + 1, (1,), generator=generator))
    return candidates[start:start + size]


def window_stds(stds: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``sigma_t`` [N] zeroed outside ``window``: the ODE there, the SDE inside."""
    mask = torch.zeros_like(stds, dtype=torch.bool)
    mask[list(window)] = True
    return torch.where(mask, stds, torch.zeros_like(stds))
