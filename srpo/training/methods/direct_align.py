"""The Direct-Align family: recover clean images from noised rollouts, reward them, backpropagate.

One update, for each process's batch of clean samples ``x0`` with their noise ``eps``:

    for each of the method's levels t (discount weight lambda(t)):
        for each branch (denoise; srpo: also inversion; fuse_branches: both as one batch of 2B):
            x0hat = recover(branch, x0, eps, t)        with grad through one (or a few) model calls
            r = reward(VAE.decode(x0hat)); loss += lambda * loss(r) / (levels x branches); backward
    clip grad norm; AdamW step (skipped, and counted, if anything was non-finite)

The methods differ only in their levels and their recovery (the strategies below):

- ``srpo`` / ``direct_align``: Direct-Align recovery (one model step, then the closed form) at
  levels drawn from the training grid; ``srpo`` may add the inversion branch;
- ``refl``: one-step prediction from the noised sample at grid levels;
- ``draft_lv``: one-step prediction at the sampler's last level, with fresh noise per draw;
- ``draft``: backpropagate through the last ``draft_steps`` sampler steps from the rollout noise.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from srpo.direct_align import (add_noise, both_branches_recover, denoise_recover, euler_sample_with_grad_tail,
                               inversion_recover, one_step_predict)
from srpo.losses import reward_loss
from srpo.noise import derived_seed
from srpo.schedules import linear_discount, shifted_linspace_discount
from srpo.training.methods.base import Level, Method, MethodContext, StepLog


class DirectAlign(Method):
    """Direct-Align's denoise branch at grid levels; the base of the family's update."""

    name = "direct_align"
    summary = "Direct-Align recovery at training-grid levels"
    steps_from_level = True  # its branch starts d_sigma above the level (inversion: below)
    samples_own_chain = False  # True: its recovery samples from the noise alone (no clean x0 needed)

    def branches(self, cfg) -> tuple[str, ...]:
        """The branches each level trains: ("denoise",), and "inversion" where the method has it and it is on."""
        return ("denoise", "inversion") if self.has_inversion and cfg.inversion else ("denoise",)

    def noise_levels(self, ctx: MethodContext, step: int) -> list[Level]:
        """``num_injections`` levels drawn from the training grid without repeats, earliest first, discounted.

        Seeded by (seed, step): the same for every process at a given step.
        """
        cfg, n = ctx.cfg, ctx.cfg.num_injections
        g = torch.Generator().manual_seed(derived_seed(cfg.seed, "levels", step))
        idx = torch.randperm(len(ctx.grid), generator=g)[:n].sort().values
        sigmas = ctx.grid[idx]
        if cfg.discount == "linear":
            weights = linear_discount(sigmas, *ctx.grid_bounds, cfg.discount_floor)
        elif cfg.discount == "shifted_linspace":
            weights = shifted_linspace_discount(sigmas, *ctx.grid_bounds, cfg.shift, cfg.discount_floor)
        else:
            weights = torch.ones(n)
        return [(int(i), float(s), float(w)) for i, s, w in zip(idx, sigmas, weights)]

    def recover(self, ctx: MethodContext, branch: str, x0: torch.Tensor, eps: torch.Tensor, t: float,
                velocity, draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [B,C,h,w] of ``branch`` at level ``t`` (with grad through the velocity)."""
        if branch == "denoise":
            return denoise_recover(velocity, x0, eps, t, ctx.d_sigma)
        return inversion_recover(velocity, x0, eps, t, ctx.d_sigma)

    def recover_group(self, ctx: MethodContext, group: tuple[str, ...], x0: torch.Tensor, eps: torch.Tensor,
                      t: float, velocity, draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [G*B,C,h,w] of a micro-step's branches ``group`` stacked: one branch, one model call at
        batch B; both (``fuse_branches``), one call at batch 2B."""
        if group == ("denoise", "inversion"):
            return torch.cat(both_branches_recover(velocity, x0, eps, t, ctx.d_sigma))
        return self.recover(ctx, group[0], x0, eps, t, velocity, draw_noise)

    def update(self, ctx: MethodContext, step: int) -> StepLog:
        """Recover images at the method's levels and branches, decode, reward, backward; one optimizer step."""
        cfg, acc, policy, start = ctx.cfg, ctx.accelerator, ctx.policy, time.perf_counter()
        if self.samples_own_chain:  # only the noise: the recovery samples from it, no rollout to make
            (prompts, eps), x0 = ctx.batches.chain_start(step), None
        else:
            prompts, x0, eps = ctx.batches.clean_batch(step)
        rows = ctx.batches.positions(step)
        cond = ctx.batches.encode(prompts)
        branches = self.branches(cfg)
        groups = [branches] if cfg.fuse_branches else [(b,) for b in branches]  # branches sharing a micro-step
        levels = self.noise_levels(ctx, step)
        velocities = {group: policy.velocity_fn(cond.repeat(len(group)) if len(group) > 1 else cond, cfg.guidance)
                      for group in groups}  # once per update, not per level
        micro = [(j, level, group) for j, level in enumerate(levels) for group in groups]
        loss_terms = len(levels) * len(branches)  # the loss averages over levels and branches

        ctx.processes.module.train()
        ctx.optimizer.zero_grad()
        rewards = {b: torch.zeros((), device=acc.device) for b in branches}
        term_names = ctx.objective.term_names
        term_values = {name: torch.zeros((), device=acc.device) for name in term_names}  # denoise branch
        total_loss = torch.zeros((), device=acc.device)
        for n, (j, (_, t, weight), group) in enumerate(micro):
            draw = lambda: ctx.batches.noise(step, f"draw{j}", eps.shape[1:])  # noqa: E731 (DRaFT-LV only)
            with ctx.processes.gradient_sync(n == len(micro) - 1):  # all-reduce once, after the last micro-step
                x0_hat = self.recover_group(ctx, group, x0, eps, t, velocities[group], draw)  # [G*B,C,h,w]
                images = policy.decode(x0_hat)  # [G*B, 3, H, W]
                per_branch, parts = ctx.objective.score(images, prompts, step, t, rows, group, f"level{j}")
                loss = torch.zeros((), device=acc.device)
                for branch, r, part in zip(group, per_branch, parts):  # r [B]
                    loss = loss + weight * reward_loss(r, cfg.loss, cfg.tau) / loss_terms
                    rewards[branch] += r.detach().mean() / len(levels)
                    if branch == "denoise":
                        for name, value in part.items():
                            term_values[name] += value.detach().mean() / len(levels)
                acc.backward(loss)  # one gradient-accumulation micro-step per level and branch (or pair)
            total_loss += loss.detach()
        stats = acc.reduce(torch.stack([total_loss, *rewards.values(), *term_values.values()]),
                           reduction="mean").tolist()
        loss_value, reward_values = stats[0], dict(zip(branches, stats[1:1 + len(branches)]))
        grad_norm, skipped = ctx.optimizer.step(step, stats)  # clip, the non-finite skip, AdamW
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward_values["denoise"], inversion_reward=reward_values.get("inversion"),
                       loss=loss_value, grad_norm=grad_norm, sigmas=[t for _, t, _ in levels], skipped=skipped,
                       seconds=seconds, images_per_second=len(prompts) * ctx.processes.world * loss_terms / seconds,
                       terms=dict(zip(term_names, stats[1 + len(branches):])) or None)


class SRPO(DirectAlign):
    """Direct-Align with the optional inversion branch (rewarded towards the negative words)."""

    name = "srpo"
    summary = "Direct-Align with the inversion branch (semantic relative preference)"
    has_inversion = True


class ReFL(DirectAlign):
    """One-step prediction ``x0hat = x_t - t * v`` from ``x0`` noised to a grid level."""

    name = "refl"
    summary = "one-step prediction at training-grid levels"
    steps_from_level = False

    def recover(self, ctx, branch, x0, eps, t, velocity, draw_noise=None):
        return one_step_predict(velocity, add_noise(x0, eps, t), t)


class DraftLV(DirectAlign):
    """DRaFT-LV: ``num_injections`` one-step predictions at the sampler's last level, each from fresh noise."""

    name = "draft_lv"
    summary = "one-step prediction from the last rollout level with fresh noise per draw"
    steps_from_level = False

    def noise_levels(self, ctx, step):
        return [(0, float(ctx.sampler_sigmas[-2]), 1.0)] * ctx.cfg.num_injections

    def recover(self, ctx, branch, x0, eps, t, velocity, draw_noise=None):
        return one_step_predict(velocity, add_noise(x0, draw_noise(), t), t)


class Draft(DirectAlign):
    """DRaFT-K: one pass through the sampler from the rollout noise, with grad through its last ``draft_steps``."""

    name = "draft"
    summary = "backpropagation through the last draft_steps sampler steps"
    steps_from_level = False
    samples_own_chain = True

    @classmethod
    def check(cls, cfg, rollout_cfg):
        if cfg.draft_steps > rollout_cfg.num_steps:
            raise ValueError(f"train.draft_steps {cfg.draft_steps} exceeds the rollout's {rollout_cfg.num_steps} "
                             "steps: use at most rollouts.num_steps (that is the full chain)")

    def noise_levels(self, ctx, step):
        return [(0, 1.0, 1.0)]

    def recover(self, ctx, branch, x0, eps, t, velocity, draw_noise=None):
        return euler_sample_with_grad_tail(velocity, eps, ctx.sampler_sigmas.to(eps), ctx.cfg.draft_steps)
