"""DRTune (arXiv 2405.00760): backpropagation through the whole sampling chain with the gradient stopped
at each step's input; maths in :func:`srpo.direct_align.drtune_sample`.

An update is the Direct-Align family's (decode, differentiable reward, backward, one optimizer step)
with one recovery: from the rollout noise, the Euler chain on the rollout schedule where every model
call sees a detached input and only ``num_train_steps`` equally spaced calls (random start) keep
their graph; the reward reads the one-step clean prediction at a step drawn from the last
``early_stop`` ones. Both draws are seeded by (train.seed, step): the same on every process.
Needs a differentiable reward: a score-only one is refused when the run is validated.

Which paper section or authors' code line each setting implements: docs/training.md, "Settings against
the papers" (the stored paper pages give no equation numbers).
"""

from __future__ import annotations

import torch

from srpo.direct_align import drtune_sample, drtune_stop_step, drtune_train_steps
from srpo.noise import derived_seed
from srpo.training.methods.base import MethodContext
from srpo.training.methods.direct_align import DirectAlign


class DRTune(DirectAlign):
    """Reward backpropagation through the chain, stop-grad at each step's input, K trained steps (train.drtune)."""

    name = "drtune"
    summary = "backpropagation through the whole chain, stop-grad at step inputs, K trained steps (train.drtune)"
    steps_from_level = False
    samples_own_chain = True
    settings = ("drtune",)

    def noise_levels(self, ctx, step):
        return [(0, 1.0, 1.0)]

    def chain_plan(self, ctx: MethodContext, step: int) -> tuple[list[int], int]:
        """(trained steps, the step whose prediction the reward reads) of update ``step``."""
        d, n = ctx.cfg.drtune, len(ctx.sampler_sigmas) - 1
        g = torch.Generator().manual_seed(derived_seed(ctx.cfg.seed, "drtune", step))
        stop = drtune_stop_step(n, d.stop_window(n), g)
        return drtune_train_steps(stop + 1, d.num_train_steps, g), stop

    def update(self, ctx, step):
        self.plan = self.chain_plan(ctx, step)  # this update's draws, read by recover
        return super().update(ctx, step)

    def recover(self, ctx, branch, x0, eps, t, velocity, draw_noise=None):
        steps, stop = self.plan
        return drtune_sample(velocity, eps, ctx.sampler_sigmas.to(eps), steps, stop)
