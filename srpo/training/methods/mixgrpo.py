"""MixGRPO (arXiv 2507.21802) and Flow-GRPO-Fast: GRPO with the SDE only inside a window of steps;
maths in :mod:`srpo.mixgrpo`, the policy gradient in :mod:`.grpo`.

The rollouts are the ODE except the window's consecutive sampler steps, where they are GRPO's SDE;
only those steps carry a log-probability and are trained (``train.grpo.steps`` is not used). The
window (``train.mixgrpo``):

- ``sliding`` (MixGRPO): starts at step 0 and moves ``stride`` steps towards t = 0 every
  ``shift_every`` updates (the trainer's update count), rolling back at the end;
- ``branch`` (Flow-GRPO-Fast): each update draws its start uniformly in ``branch_range`` (default the
  first half of the steps), seeded by (train.seed, step): the ODE branches into the SDE there.

Everything else (groups, advantages, clip, KL, inner epochs, micro-batches) is :class:`GRPO`'s.

Which paper section or authors' code line each setting implements: docs/training.md, "Settings against
the papers" (the stored paper pages give no equation numbers).
"""

from __future__ import annotations

import torch

from srpo import grpo, mixgrpo
from srpo.noise import derived_seed
from srpo.training.methods.base import MethodContext
from srpo.training.methods.grpo import GRPO


class MixGRPO(GRPO):
    """GRPO whose SDE and training are confined to a sliding or branching window of steps (train.mixgrpo)."""

    name = "mixgrpo"
    summary = "GRPO with the SDE and training only in a sliding / branching window of steps (train.grpo, train.mixgrpo)"
    settings = ("grpo", "mixgrpo")

    @classmethod
    def check(cls, cfg, rollout_cfg):
        super().check(cfg, rollout_cfg)
        if cfg.grpo.steps != "all":
            raise ValueError(f"train.grpo.steps {cfg.grpo.steps!r} is not used by mixgrpo (the window's steps are the "
                             "trained ones): remove train.grpo.steps and num_train_steps, and size the window with "
                             "train.mixgrpo.window_size")
        m, candidates = cfg.mixgrpo, rollout_cfg.num_steps - 1  # every step but the one into t = 0
        if m.window_size > candidates:
            raise ValueError(f"train.mixgrpo.window_size {m.window_size} exceeds the {candidates} stochastic sampler "
                             "steps (rollouts.num_steps - 1): use a smaller window or more sampler steps")
        if m.mode == "branch":
            lo, hi = cls.branch_range(m, rollout_cfg.num_steps)
            mixgrpo.branch_window(range(candidates), m.window_size, lo, hi, torch.Generator())  # raises naming the range

    @staticmethod
    def branch_range(m, num_steps: int) -> tuple[int, int]:
        """``[lo, hi)`` of the branch window's steps: ``train.mixgrpo.branch_range``, or the first half."""
        return tuple(m.branch_range) if m.branch_range is not None else (0, num_steps // 2)

    def stochastic_plan(self, ctx: MethodContext, step: int, sigmas: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """``sigma_t`` zeroed outside this update's window (the ODE there), and the window as the trained steps."""
        g, m = ctx.cfg.grpo, ctx.cfg.mixgrpo
        stds = grpo.sde_sigmas(sigmas, g.noise_level, g.noise_schedule)  # [T]
        candidates = grpo.stochastic_steps(sigmas, stds)
        if m.mode == "sliding":
            window = mixgrpo.sliding_window(step, candidates, m.window_size, m.shift_every, m.stride, m.roll_back)
        else:
            picker = torch.Generator().manual_seed(derived_seed(ctx.cfg.seed, "mixgrpo-branch", step))
            window = mixgrpo.branch_window(candidates, m.window_size, *self.branch_range(m, len(sigmas) - 1), picker)
        return mixgrpo.window_stds(stds, window), window
