"""DiffusionNFT (arXiv 2509.16117): reinforcement on the forward process; maths in :mod:`srpo.nft`.

An update (seeded by (train.seed, step, global sample index, member, level), so it is the same
whatever the process count and a resumed run continues exactly):

1. the *old* policy (the soft-updated copy, :class:`~srpo.training.methods.copies.ParamCopy`) samples
   G clean images per prompt with the ODE; they are scored WITHOUT gradient (a score-only reward
   is enough), the rewards normalised (the batch's std by default) and mapped onto optimality
   probabilities ``r`` in [0, 1];
2. each sample is noised afresh at ``int(N * train_fraction)`` of the sampler's levels (its own
   random order); at each level (one backward micro-step) the trained velocity ``v`` and the old
   one ``v_old`` give the implicit policies ``v+- = v_old +- beta (v - v_old)`` and the loss
   ``scale * mean[r e(v+) + (1 - r) e(v-)]`` (+ ``kl`` x ``mean((v - v_base)^2)``), averaged over levels;
3. one optimizer step, then ``old <- d old + (1 - d) theta`` with the decay of the schedule.

The old policy is state: it goes into checkpoints (:meth:`state_dict`). The base for the KL is the
model with its adapters off (LoRA) or a copy of the weights taken before the first update (full).

Which paper section or authors' code line each setting implements: docs/training.md, "Settings against
the papers" (the stored paper pages give no equation numbers).
"""

from __future__ import annotations

import time

import torch

from srpo import nft
from srpo.noise import derived_seed
from srpo.training.methods.base import Method, MethodContext, StepLog
from srpo.training.methods.copies import FrozenBase, ParamCopy, trainable_named
from srpo.training.methods.groups import (chunks, group_advantages, mean_over_processes, member_noise, members,
                                         sample_clean, score_clean)


class NFT(Method):
    """DiffusionNFT: the flow-matching loss contrasting implicit positive and negative policies (train.nft)."""

    name = "nft"
    summary = "DiffusionNFT: forward-process contrast of implicit positive / negative policies (train.nft)"
    takes_score_only = True
    settings = ("nft",)

    @classmethod
    def micro_batch(cls, cfg):
        return cfg.nft.micro_batch or cfg.batch_size * cfg.nft.group_size

    @classmethod
    def weight_copies(cls, cfg):
        return 1 + (cfg.nft.kl > 0 and cfg.finetune == "full")  # the old policy; the base (LoRA: adapters off)

    @classmethod
    def check(cls, cfg, rollout_cfg):
        count = cls.num_levels(cfg, rollout_cfg.num_steps)
        if count < 1:
            raise ValueError(f"train.nft.train_fraction {cfg.nft.train_fraction} of {rollout_cfg.num_steps} sampler "
                             "levels trains none: raise train.nft.train_fraction or rollouts.num_steps")

    @staticmethod
    def num_levels(cfg, num_steps: int) -> int:
        """Levels each sample trains per update: ``int(N * train_fraction)`` (the authors' timestep fraction)."""
        return int(num_steps * cfg.nft.train_fraction)

    def __init__(self):
        self.old: ParamCopy | None = None  # the sampling ("old") policy, soft-updated after each update
        self.base = FrozenBase()  # for the KL term

    def start(self, ctx):
        self.old = ParamCopy(trainable_named(ctx.processes))
        if ctx.cfg.nft.kl > 0:
            self.base.take(ctx)

    def state_dict(self):
        return self.old.state_dict("old.")

    def load_state_dict(self, state):
        self.old.load_state_dict(state, "old.")

    def update(self, ctx: MethodContext, step: int) -> StepLog:
        cfg, g, policy, start = ctx.cfg, ctx.cfg.nft, ctx.policy, time.perf_counter()
        with self.old.swapped_in():  # the old policy samples
            prompts, x0 = sample_clean(ctx, step, g.group_size, "nft-eps")  # N, [N, C, h, w]
        rewards = score_clean(ctx, x0, prompts, step, g.group_size, "nft")  # [N]
        advantages = group_advantages(ctx, rewards, g.group_size, g.advantage_eps, global_std=g.global_std)
        r = nft.optimality_probability(advantages, g.advantage_clip).to(x0)  # [N]
        count = self.num_levels(cfg, len(ctx.sampler_sigmas) - 1)
        sigmas = ctx.sampler_sigmas.to(x0)
        levels = torch.cat([nft.train_levels(sigmas, 1, count, torch.Generator().manual_seed(
            derived_seed(cfg.seed, step, "nft-levels", pos, j))) for pos, j in members(ctx, step, g.group_size)])
        n = len(prompts)
        micro = [(c, rows) for c in range(count) for rows in chunks(n, g.micro_batch)]  # level x sample chunk
        velocities = {rows.start: policy.velocity_fn(ctx.batches.encode(prompts[rows]), cfg.guidance)
                      for rows in chunks(n, g.micro_batch)}

        ctx.processes.module.train()
        ctx.optimizer.zero_grad()
        total = torch.zeros((), device=ctx.accelerator.device)
        for m, (c, rows) in enumerate(micro):  # one backward micro-step per level and chunk
            if rows.start == 0:
                noise = member_noise(ctx, step, g.group_size, "nft-noise", c)  # [N, C, h, w] level c's
            velocity, t, x0_rows = velocities[rows.start], levels[rows, c], x0[rows]  # t [n]
            tt = t.view(-1, *([1] * (x0.ndim - 1)))
            x_t = (1 - tt) * x0_rows + tt * noise[rows]
            # the copies' velocities first: swapping weights in place after the graph is built would break it
            with self.old.swapped_in():
                v_old = velocity(x_t, t)
            if g.kl > 0:
                with self.base.swapped_in(ctx):
                    v_base = velocity(x_t, t)
            with ctx.processes.gradient_sync(m == len(micro) - 1):
                v = velocity(x_t, t)  # with grad
                loss = nft.nft_loss(v, v_old, x_t, x0_rows, t, r[rows], g.beta, g.adaptive_weighting, g.loss_scale)
                if g.kl > 0:
                    loss = loss + g.kl * nft.velocity_l2(v, v_base).mean()
                loss = loss * (rows.stop - rows.start) / (n * count)  # the mean over samples and levels
                ctx.accelerator.backward(loss)
            total += loss.detach()
        loss_value = mean_over_processes(ctx, total)
        reward = mean_over_processes(ctx, rewards.mean())
        grad_norm, skipped = ctx.optimizer.step(step, [loss_value, reward])
        self.old.soft_update(nft.old_policy_decay(step + 1, g.decay_flat, g.decay_rate, g.decay_cap))
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward, inversion_reward=None, loss=loss_value, grad_norm=grad_norm,
                       sigmas=sorted({float(s) for s in levels.flatten()}, reverse=True), skipped=skipped, seconds=seconds,
                       images_per_second=len(prompts) * ctx.processes.world / seconds)
