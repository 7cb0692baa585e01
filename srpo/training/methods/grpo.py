"""GRPO (Flow-GRPO / DanceGRPO): a policy gradient over groups of SDE samples; maths in :mod:`srpo.grpo`.

It takes score-only rewards: it needs the reward's numbers only. With
``train.grpo.kl > 0`` and full fine-tuning, the method object holds a copy of the base weights, taken
before any resume (LoRA: the base is the transformer with its adapters off).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from srpo import grpo
from srpo.noise import derived_seed, seeded_noise
from srpo.training.batches import repeat_each
from srpo.training.methods.base import Method, MethodContext, StepLog
from srpo.training.methods.copies import FrozenBase


@dataclass
class Groups:
    """One update's sampled groups on this process: B prompts x G members, flattened to N = B*G."""

    prompts: list[str]  # N prompts, each prompt's G members consecutive
    latents: torch.Tensor  # [T+1, N, C, h, w] the SDE chain, latents[0] the initial noise
    log_probs: torch.Tensor  # [T, N] each step's log-probability under the sampling policy
    rewards: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N] normalised within each group
    sigmas: torch.Tensor  # [T+1] the sampler's levels
    stds: torch.Tensor  # [T] sigma_t of each step
    steps: list[int]  # the steps this update trains on


class GRPO(Method):
    """Flow-GRPO / DanceGRPO: sample G images per prompt with the SDE, reward them, clipped policy gradient.

    An update (all of it seeded by (train.seed, step, global sample index, member, sampler step),
    so it is the same whatever the process count, and a resumed run continues exactly):

    1. :meth:`sample`: for each of this process's B prompts, G chains of the marginal-preserving
       SDE on the rollout schedule (no grad, model in eval mode), keeping every latent and each
       step's log-probability; the G images are decoded and scored (CLIP-style rewards with the
       run's control words and reward form, read at the lowest grid level's k; or a score-only
       reward's ``score``), and the rewards normalised within each group.
    2. :meth:`optimise`: ``inner_epochs`` optimizer steps; each recomputes the log-probabilities of
       the chosen steps with grad (micro-steps of ``micro_batch`` samples per step, accumulated,
       gradients synchronised once) and minimises the clipped objective, plus ``kl`` times the KL to
       the frozen reference. The first epoch's ratio is exactly 1 (its old log-probabilities are
       its own, detached: on-policy), later epochs are measured against them.
    """

    name = "grpo"
    summary = "policy gradient over groups of SDE samples (train.grpo)"
    takes_score_only = True
    settings = ("grpo",)

    def __init__(self):
        self.reference = FrozenBase()  # the KL's reference: LoRA, adapters off; full, the base weights

    def start(self, ctx):
        if ctx.cfg.grpo.kl > 0:
            self.reference.take(ctx)  # before any resume: the base's weights

    @classmethod
    def weight_copies(cls, cfg):
        return int(cfg.grpo.kl > 0 and cfg.finetune == "full")  # the frozen reference (LoRA: adapters off)

    @classmethod
    def check(cls, cfg, rollout_cfg):
        g = cfg.grpo
        if rollout_cfg.num_steps < 2:
            raise ValueError(f"rollouts.num_steps {rollout_cfg.num_steps} leaves grpo no stochastic step (the step "
                             "into t = 0 is deterministic): use at least 2 sampler steps")
        if g.num_train_steps is not None and g.steps != "all" and g.num_train_steps > rollout_cfg.num_steps - 1:
            raise ValueError(f"train.grpo.num_train_steps {g.num_train_steps} exceeds the {rollout_cfg.num_steps - 1} "
                             "stochastic sampler steps: use at most rollouts.num_steps - 1, or steps: all")

    # ---- sampling ------------------------------------------------------------------------
    def sample(self, ctx: MethodContext, step: int) -> Groups:
        """This process's groups for ``step`` (no grad): chains, log-probs, rewards, advantages, steps."""
        cfg, g, policy = ctx.cfg, ctx.cfg.grpo, ctx.policy
        prompts = ctx.batches.rollout_batch(step).prompts  # B
        positions = ctx.batches.positions(step)
        members = [(pos, j) for pos in positions for j in range(g.group_size)]  # N = B*G
        group_prompts = repeat_each(prompts, g.group_size)
        shape = ctx.batches.latent_shape  # [C, h, w]
        start_seeds = grpo.group_seeds([[derived_seed(cfg.seed, step, "grpo-eps", pos, j) for j in range(g.group_size)]
                                        for pos in positions], g.shared_noise)
        eps = seeded_noise(shape, start_seeds).to(policy.device)  # [N, C, h, w]
        sigmas = ctx.sampler_sigmas.to(eps)
        stds, steps = self.stochastic_plan(ctx, step, sigmas)  # [T] sigma_t, and the steps trained

        def noise(k: int) -> torch.Tensor:  # [N, C, h, w] the SDE noise of sampler step k
            return seeded_noise(shape, [derived_seed(cfg.seed, step, "grpo-sde", pos, j, k)
                                        for pos, j in members]).to(eps)

        module = ctx.processes.module
        was_training = module.training
        try:
            module.eval()
            velocity = policy.velocity_fn(ctx.batches.encode(group_prompts), cfg.guidance)
            latents, log_probs = grpo.sde_sample(velocity, eps, sigmas, stds, noise, g.log_prob)
        finally:
            module.train(was_training)
        rewards = self.score(ctx, latents[-1], group_prompts, step)  # [N]
        advantages = grpo.group_advantages(rewards, g.group_size, g.advantage_eps, g.advantage_clip)
        return Groups(group_prompts, latents, log_probs, rewards, advantages, sigmas, stds, steps)

    def stochastic_plan(self, ctx: MethodContext, step: int, sigmas: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The SDE's ``sigma_t`` [T] for this update's rollouts and the steps it trains (the same on every process)."""
        g = ctx.cfg.grpo
        stds = grpo.sde_sigmas(sigmas, g.noise_level, g.noise_schedule)  # [T]
        picker = torch.Generator().manual_seed(derived_seed(ctx.cfg.seed, "grpo-steps", step))
        return stds, grpo.train_steps(grpo.stochastic_steps(sigmas, stds), g.steps, g.num_train_steps, picker)

    @torch.no_grad()
    def score(self, ctx: MethodContext, x0: torch.Tensor, prompts: list[str], step: int) -> torch.Tensor:
        """Rewards [N] of clean latents ``x0`` [N,C,h,w]: a score-only reward's score, else the run's reward form."""
        images = ctx.policy.decode(x0)  # [N, 3, H, W]
        members = [(pos, j) for pos in ctx.batches.positions(step) for j in range(ctx.cfg.grpo.group_size)]
        (rewards,), _ = ctx.objective.score(images, prompts, step, ctx.grid_bounds[0], members, tag="grpo")
        return rewards.float().to(x0.device)

    # ---- the policy gradient -------------------------------------------------------------
    def micro_steps(self, ctx: MethodContext, groups: Groups) -> list[tuple[int, slice]]:
        """(sampler step, sample slice) of each backward micro-step: every trained step x every chunk."""
        n = len(groups.prompts)
        size = ctx.cfg.grpo.micro_batch or n
        return [(k, slice(i, min(i + size, n))) for k in groups.steps for i in range(0, n, size)]

    def micro_loss(self, ctx: MethodContext, groups: Groups, k: int, rows: slice,
                   old: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipped objective (+ KL) of step ``k`` on samples ``rows``, with grad, and its ratio [n]."""
        cfg, g, policy = ctx.cfg, ctx.cfg.grpo, ctx.policy
        prompts = groups.prompts[rows]
        x, x_next = groups.latents[k][rows], groups.latents[k + 1][rows]
        t, t_next, sigma = float(groups.sigmas[k]), float(groups.sigmas[k + 1]), float(groups.stds[k])
        velocity = policy.velocity_fn(ctx.batches.encode(prompts), cfg.guidance)
        if g.kl > 0:  # the reference's step first: its weights are swapped in place, before the graph is built
            with self.reference.swapped_in(ctx):
                _, ref_mean, _ = grpo.step_log_prob(velocity, x, x_next, t, t_next, sigma, g.log_prob)
        log_prob, mean, std = grpo.step_log_prob(velocity, x, x_next, t, t_next, sigma, g.log_prob)  # [n]
        key = (k, rows.start)
        if key not in old:  # the first inner epoch: on-policy, ratio exactly 1
            old[key] = log_prob.detach()
        loss, ratio = grpo.clipped_objective(log_prob, old[key], groups.advantages[rows], g.clip_range)
        if g.kl > 0:
            loss = loss + g.kl * grpo.gaussian_kl(mean, ref_mean, std).mean()
        return loss, ratio.detach()

    def optimise(self, ctx: MethodContext, groups: Groups, step: int) -> tuple[float, float, bool, list]:
        """``inner_epochs`` optimizer steps on ``groups``: (loss, grad norm, skipped) of the last, and each epoch's ratios."""
        micro = self.micro_steps(ctx, groups)
        n = len(groups.prompts)
        old: dict = {}
        ratios, result = [], (0.0, 0.0, False)
        ctx.processes.module.train()
        for _ in range(ctx.cfg.grpo.inner_epochs):
            ctx.optimizer.zero_grad()
            total = torch.zeros((), device=ctx.accelerator.device)
            epoch_ratios = []
            for m, (k, rows) in enumerate(micro):
                with ctx.processes.gradient_sync(m == len(micro) - 1):  # all-reduce once, after the last
                    loss, ratio = self.micro_loss(ctx, groups, k, rows, old)
                    loss = loss * (rows.stop - rows.start) / (n * len(groups.steps))  # the mean over samples and steps
                    ctx.accelerator.backward(loss)
                total += loss.detach()
                epoch_ratios.append(ratio)
            ratios.append(torch.cat(epoch_ratios))
            loss_value = float(ctx.accelerator.reduce(total, reduction="mean"))
            result = (loss_value, *ctx.optimizer.step(step, [loss_value]))
        return (*result, ratios)

    def update(self, ctx, step):
        start = time.perf_counter()
        groups = self.sample(ctx, step)
        loss, grad_norm, skipped, _ = self.optimise(ctx, groups, step)
        reward = float(ctx.accelerator.reduce(groups.rewards.mean().to(ctx.accelerator.device),
                                                  reduction="mean"))
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward, inversion_reward=None, loss=loss, grad_norm=grad_norm,
                       sigmas=[float(groups.sigmas[k]) for k in groups.steps], skipped=skipped, seconds=seconds,
                       images_per_second=len(groups.prompts) * ctx.processes.world / seconds)
