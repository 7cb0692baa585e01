"""Groups of clean samples per prompt and their rewards: what the likelihood-free methods (nft, awm) learn from.

Each of this process's B prompts gets G images from the ODE on the rollout schedule (no grad, model
in eval mode), each started from noise seeded by (train.seed, step, tag, global position, member),
so a batch is the same whatever the process count, and a resumed run continues exactly.
"""

from __future__ import annotations

import torch

from srpo import grpo
from srpo.noise import derived_seed, seeded_noise
from srpo.training.batches import repeat_each
from srpo.training.methods.base import MethodContext


def members(ctx: MethodContext, step: int, group_size: int) -> list[tuple[int, int]]:
    """(global position, member) of each of this process's N = B*G samples, each prompt's G consecutive."""
    return [(pos, j) for pos in ctx.batches.positions(step) for j in range(group_size)]


def member_noise(ctx: MethodContext, step: int, group_size: int, *tag) -> torch.Tensor:
    """Standard normal latents [N, C, h, w], one per sample, seeded by (seed, step, *tag, position, member)."""
    seeds = [derived_seed(ctx.cfg.seed, step, *tag, pos, j) for pos, j in members(ctx, step, group_size)]
    return seeded_noise(ctx.batches.latent_shape, seeds).to(ctx.policy.device)


@torch.no_grad()
def sample_clean(ctx: MethodContext, step: int, group_size: int, tag: str) -> tuple[list[str], torch.Tensor]:
    """This process's N prompts (each repeated G times) and their clean ODE samples x0 [N, C, h, w]."""
    prompts = repeat_each(ctx.batches.rollout_batch(step).prompts, group_size)
    eps = member_noise(ctx, step, group_size, tag)  # [N, C, h, w]
    sigmas = ctx.sampler_sigmas.to(eps)
    module = ctx.processes.module
    was_training = module.training
    try:
        module.eval()
        velocity = ctx.policy.velocity_fn(ctx.batches.encode(prompts), ctx.cfg.guidance)
        latents, _ = grpo.sde_sample(velocity, eps, sigmas, torch.zeros(len(sigmas) - 1), lambda k: None)
    finally:
        module.train(was_training)
    return prompts, latents[-1]


@torch.no_grad()
def score_clean(ctx: MethodContext, x0: torch.Tensor, prompts: list[str], step: int, group_size: int,
                tag: str) -> torch.Tensor:
    """Rewards [N] of clean latents ``x0`` [N,C,h,w]: a score-only reward's score, else the run's reward form
    read at the lowest training level (no gradient either way)."""
    images = ctx.policy.decode(x0)  # [N, 3, H, W]
    (rewards,), _ = ctx.objective.score(images, prompts, step, ctx.grid_bounds[0], members(ctx, step, group_size),
                                        tag=tag)
    return rewards.float().to(x0.device)


def group_advantages(ctx: MethodContext, rewards: torch.Tensor, group_size: int, eps: float,
                     global_std: bool) -> torch.Tensor:
    """Advantages [N] of this process's rewards [N] (groups of ``group_size`` consecutive): each group's mean
    removed, divided by the group's std, or (``global_std``, the authors' NFT and AWM) by the std of every
    process's rewards gathered, so that the result does not depend on how the batch is split."""
    if not global_std or ctx.processes.world == 1:
        return grpo.group_advantages(rewards, group_size, eps, global_std=global_std)
    everyone = ctx.accelerator.gather(rewards.to(ctx.accelerator.device)).to(rewards)  # [W*N], rank-major
    advantages = grpo.group_advantages(everyone, group_size, eps, global_std=True)
    return advantages.reshape(ctx.processes.world, -1)[ctx.processes.rank]


def chunks(n: int, size: int | None) -> list[slice]:
    """Consecutive slices of ``size`` (None: all ``n`` at once) covering ``range(n)``: the micro-steps' samples."""
    size = size or n
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def mean_over_processes(ctx: MethodContext, value: torch.Tensor) -> float:
    return float(ctx.accelerator.reduce(value.detach().float().to(ctx.accelerator.device), reduction="mean"))
