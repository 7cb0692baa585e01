"""The training methods: how an update picks its noise levels and recovers images to reward.

One :class:`Method` per ``train.method`` name, chosen once by the trainer (:func:`method_for`):

- ``srpo`` / ``direct_align``: Direct-Align recovery (one model step, then the closed form) at
  levels drawn from the training grid; ``srpo`` may add the inversion branch.
- ``refl``: one-step prediction from the noised sample at grid levels.
- ``draft_lv``: one-step prediction at the sampler's last level, with fresh noise per draw.
- ``draft``: backpropagate through the last ``draft_steps`` sampler steps from the rollout noise.

A method reads the trainer's grid, sampler schedule and config. :meth:`Method.update` is the
whole update of a step: every method here returns the trainer's recover-decode-reward update
(:meth:`~srpo.training.trainer.SRPOTrainer.reward_update`), which calls back into
:meth:`noise_levels`, :meth:`branches` and :meth:`recover`; a method that trains otherwise
(a policy gradient over sampled chains) overrides :meth:`update` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from srpo.noise import derived_seed

from srpo.direct_align import (add_noise, both_branches_recover, denoise_recover, euler_sample_with_grad_tail,
                               inversion_recover, one_step_predict)
from srpo.schedules import linear_discount, shifted_linspace_discount

if TYPE_CHECKING:
    from srpo.config import RolloutConfig, TrainConfig
    from srpo.training.trainer import SRPOTrainer, StepLog

#: (grid index, sigma, discount weight) of one injected noise level.
Level = tuple[int, float, float]


class Method:
    """A training method (the base: Direct-Align's denoise branch at grid levels)."""

    name = "direct_align"
    has_inversion = False  # whether the inversion branch (train.inversion) belongs to this method

    def check(self, cfg: "TrainConfig", rollout_cfg: "RolloutConfig") -> None:
        """Refuse settings this method cannot run with these rollouts (before any model work)."""

    def branches(self, cfg: "TrainConfig") -> tuple[str, ...]:
        """The branches each level trains: ("denoise",), and "inversion" where the method has it and it is on."""
        return ("denoise", "inversion") if self.has_inversion and cfg.inversion else ("denoise",)

    def noise_levels(self, trainer: "SRPOTrainer", step: int) -> list[Level]:
        """``num_injections`` levels drawn from the training grid without repeats, earliest first, discounted.

        Seeded by (seed, step): the same for every process at a given step.
        """
        cfg, n = trainer.cfg, trainer.cfg.num_injections
        g = torch.Generator().manual_seed(derived_seed(cfg.seed, "levels", step))
        idx = torch.randperm(len(trainer.grid), generator=g)[:n].sort().values
        sigmas = trainer.grid[idx]
        if cfg.discount == "linear":
            weights = linear_discount(sigmas, *trainer.grid_bounds, cfg.discount_floor)
        elif cfg.discount == "shifted_linspace":
            weights = shifted_linspace_discount(sigmas, *trainer.grid_bounds, cfg.shift, cfg.discount_floor)
        else:
            weights = torch.ones(n)
        return [(int(i), float(s), float(w)) for i, s, w in zip(idx, sigmas, weights)]

    def recover(self, trainer: "SRPOTrainer", branch: str, x0: torch.Tensor, eps: torch.Tensor, t: float,
                velocity, draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [B,C,h,w] of ``branch`` at level ``t`` (with grad through the velocity)."""
        if branch == "denoise":
            return denoise_recover(velocity, x0, eps, t, trainer.d_sigma)
        return inversion_recover(velocity, x0, eps, t, trainer.d_sigma)

    def recover_group(self, trainer: "SRPOTrainer", group: tuple[str, ...], x0: torch.Tensor, eps: torch.Tensor,
                      t: float, velocity, draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [G*B,C,h,w] of a micro-step's branches ``group`` stacked (one branch: :meth:`recover`)."""
        if group == ("denoise", "inversion"):
            return torch.cat(both_branches_recover(velocity, x0, eps, t, trainer.d_sigma))
        return trainer.recover(group[0], x0, eps, t, velocity, draw_noise)

    def update(self, trainer: "SRPOTrainer", step: int) -> "StepLog":
        """One whole update: recover images at this method's levels, reward them, one optimizer step."""
        return trainer.reward_update(step)


class SRPO(Method):
    """Direct-Align with the optional inversion branch (rewarded towards the negative words)."""

    name = "srpo"
    has_inversion = True


class ReFL(Method):
    """One-step prediction ``x0hat = x_t - t * v`` from ``x0`` noised to a grid level."""

    name = "refl"

    def recover(self, trainer, branch, x0, eps, t, velocity, draw_noise=None):
        return one_step_predict(velocity, add_noise(x0, eps, t), t)


class DraftLV(Method):
    """DRaFT-LV: ``num_injections`` one-step predictions at the sampler's last level, each from fresh noise."""

    name = "draft_lv"

    def noise_levels(self, trainer, step):
        return [(0, float(trainer.sampler_sigmas[-2]), 1.0)] * trainer.cfg.num_injections

    def recover(self, trainer, branch, x0, eps, t, velocity, draw_noise=None):
        return one_step_predict(velocity, add_noise(x0, draw_noise(), t), t)


class Draft(Method):
    """DRaFT-K: one pass through the sampler from the rollout noise, with grad through its last ``draft_steps``."""

    name = "draft"

    def check(self, cfg, rollout_cfg):
        if cfg.draft_steps > rollout_cfg.num_steps:
            raise ValueError(f"train.draft_steps {cfg.draft_steps} exceeds the rollout's {rollout_cfg.num_steps} "
                             "steps: use at most rollouts.num_steps (that is the full chain)")

    def noise_levels(self, trainer, step):
        return [(0, 1.0, 1.0)]

    def recover(self, trainer, branch, x0, eps, t, velocity, draw_noise=None):
        return euler_sample_with_grad_tail(velocity, eps, trainer.sampler_sigmas.to(eps), trainer.cfg.draft_steps)


#: Every ``train.method`` name and its method.
METHODS: dict[str, Method] = {m.name: m for m in (SRPO(), Method(), ReFL(), DraftLV(), Draft())}


def method_for(cfg: "TrainConfig") -> Method:
    """The method ``cfg.method`` names."""
    try:
        return METHODS[cfg.method]
    except KeyError:
        raise ValueError(f"train.method {cfg.method!r} is not a training method: use one of "
                         f"{sorted(METHODS)}") from None
