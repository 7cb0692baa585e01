"""AWM, advantage-weighted matching (arXiv 2509.25050): the pretraining flow-matching loss weighted by
group advantages; maths in :mod:`srpo.awm`.

An update (seeded by (train.seed, step, global sample index, member, level) like the others):

1. the policy samples G clean images per prompt with the ODE (no grad); they are scored WITHOUT
   gradient (a score-only reward is enough), the advantages normalised (the batch's std by default),
   clipped at ``advantage_clip`` and rescaled onto ``[-advantage_max, advantage_max]``;
2. ``num_train_steps`` sampler levels, one from each stratum of steps ``1 .. int(N * train_fraction)``
   (shared by the batch); at each (one backward micro-step) every sample is noised afresh and the
   loss is ``mean(A * w(t, ||v - (eps - x0)||^2))`` plus ``kl`` x ``mean((v - v_base)^2)`` and ``ema_kl``
   x ``mean((v - v_ema)^2)``, averaged over the levels;
3. one optimizer step (on policy: the authors' PPO ratio is 1 and its gradient this loss's), then the
   EMA policy ``ema <- d ema + (1 - d) theta``, ``d = min(ema_decay_cap, ema_decay_rate * update)``.

The EMA policy is state: it goes into checkpoints. The base is as in :mod:`.nft`.

Which paper section or authors' code line each setting implements: docs/training.md, "Settings against
the papers" (the stored paper pages give no equation numbers).
"""

from __future__ import annotations

import time

import torch

from srpo import awm
from srpo.nft import velocity_l2
from srpo.noise import derived_seed
from srpo.training.methods.base import Method, MethodContext, StepLog
from srpo.training.methods.copies import FrozenBase, ParamCopy, trainable_named
from srpo.training.methods.groups import (chunks, group_advantages, mean_over_processes, member_noise, sample_clean,
                                         score_clean)


class AWM(Method):
    """Advantage-weighted matching: flow matching on the policy's own samples, weighted by advantages (train.awm)."""

    name = "awm"
    summary = "advantage-weighted flow matching on groups of the policy's samples (train.awm)"
    takes_score_only = True
    settings = ("awm",)

    def __init__(self):
        self.base, self.ema = FrozenBase(), None  # the KL terms' base and EMA policy (a ParamCopy, ema_kl > 0)

    @classmethod
    def micro_batch(cls, cfg):
        return cfg.awm.micro_batch or cfg.batch_size * cfg.awm.group_size

    @classmethod
    def weight_copies(cls, cfg):
        return (cfg.awm.ema_kl > 0) + (cfg.awm.kl > 0 and cfg.finetune == "full")  # the EMA; the base

    @classmethod
    def check(cls, cfg, rollout_cfg):
        a = cfg.awm
        awm.stratified_steps(rollout_cfg.num_steps, a.train_fraction, a.num_train_steps, torch.Generator())  # raises
        awm.weighted_error(torch.zeros(1), torch.zeros(1), a.weighting, a.ghuber_power)

    def start(self, ctx):
        if ctx.cfg.awm.kl > 0:
            self.base.take(ctx)
        if ctx.cfg.awm.ema_kl > 0:
            self.ema = ParamCopy(trainable_named(ctx.processes))

    def state_dict(self):
        return self.ema.state_dict("ema.") if self.ema is not None else {}

    def load_state_dict(self, state):
        if self.ema is not None:
            self.ema.load_state_dict(state, "ema.")

    def update(self, ctx: MethodContext, step: int) -> StepLog:
        cfg, a, policy, start = ctx.cfg, ctx.cfg.awm, ctx.policy, time.perf_counter()
        prompts, x0 = sample_clean(ctx, step, a.group_size, "awm-eps")  # N, [N, C, h, w]
        rewards = score_clean(ctx, x0, prompts, step, a.group_size, "awm")  # [N]
        adv = group_advantages(ctx, rewards, a.group_size, a.advantage_eps, global_std=a.global_std)
        adv = awm.scaled_advantages(adv, a.advantage_clip, a.advantage_max).to(x0)  # [N]
        sigmas = ctx.sampler_sigmas.to(x0)
        picker = torch.Generator().manual_seed(derived_seed(cfg.seed, "awm-steps", step))  # the same on every process
        steps = awm.stratified_steps(len(sigmas) - 1, a.train_fraction, a.num_train_steps, picker)
        n = len(prompts)
        micro = [(m, k, rows) for m, k in enumerate(steps) for rows in chunks(n, a.micro_batch)]  # level x chunk
        velocities = {rows.start: policy.velocity_fn(ctx.batches.encode(prompts[rows]), cfg.guidance)
                      for rows in chunks(n, a.micro_batch)}

        ctx.processes.module.train()
        ctx.optimizer.zero_grad()
        total = torch.zeros((), device=ctx.accelerator.device)
        for i, (m, k, rows) in enumerate(micro):  # one backward micro-step per level and chunk
            if rows.start == 0:
                noise = member_noise(ctx, step, a.group_size, "awm-noise", m)  # [N, C, h, w] level m's
            velocity, x0_rows, eps = velocities[rows.start], x0[rows], noise[rows]
            t = sigmas[k].expand(x0_rows.shape[0])  # [n]
            x_t = (1 - sigmas[k]) * x0_rows + sigmas[k] * eps
            if a.kl > 0:  # the copies' velocities before the graph is built (swapping is in place)
                with self.base.swapped_in(ctx):
                    v_base = velocity(x_t, t)
            if self.ema is not None:
                with self.ema.swapped_in():
                    v_ema = velocity(x_t, t)
            with ctx.processes.gradient_sync(i == len(micro) - 1):
                v = velocity(x_t, t)  # with grad
                weighted = awm.weighted_error(awm.flow_matching_error(v, x0_rows, eps), t, a.weighting, a.ghuber_power)
                loss = awm.awm_loss(weighted, adv[rows])
                if a.kl > 0:
                    loss = loss + a.kl * velocity_l2(v, v_base).mean()
                if self.ema is not None:
                    loss = loss + a.ema_kl * velocity_l2(v, v_ema).mean()
                loss = loss * (rows.stop - rows.start) / (n * len(steps))  # the mean over samples and levels
                ctx.accelerator.backward(loss)
            total += loss.detach()
        loss_value = mean_over_processes(ctx, total)
        reward = mean_over_processes(ctx, rewards.mean())
        grad_norm, skipped = ctx.optimizer.step(step, [loss_value, reward])
        if self.ema is not None:
            self.ema.soft_update(min(a.ema_decay_cap, a.ema_decay_rate * (step + 1)))
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward, inversion_reward=None, loss=loss_value, grad_norm=grad_norm,
                       sigmas=[float(sigmas[k]) for k in steps], skipped=skipped, seconds=seconds,
                       images_per_second=len(prompts) * ctx.processes.world / seconds)
