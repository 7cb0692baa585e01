"""Policy-gradient maths for flow models (Flow-GRPO, arXiv 2505.05470; DanceGRPO, arXiv 2505.07818).

Conventions (diffusers', the library's everywhere): ``x_t = (1 - t) x0 + t eps``, t = 1 is noise,
the velocity targets ``v = eps - x0`` and the sampler walks t *down* a grid
``t_0 = 1 > t_1 > ... > t_N = 0``; the ODE's Euler step is ``x_{t'} = x_t + (t' - t) v`` with
``dt = t' - t < 0``.

The SDE with the ODE's marginals. The score of ``p_t`` follows from the velocity: with
``x0hat = x - t v`` and ``E[eps | x] = x + (1 - t) v``, ``grad log p_t(x) = -(x + (1 - t) v) / t``.
For any ``sigma_t`` the reverse-time SDE

    dx = [v - (sigma_t^2 / 2) grad log p_t(x)] dt + sigma_t dW      (dt < 0)

has the same marginals as the ODE ``dx = v dt``. Its Euler-Maruyama step (Flow-GRPO eq. 9, with
dt negative and the noise scaled by ``sqrt(|dt|)``) is

    mean  = x + [v + sigma_t^2 / (2 t) (x + (1 - t) v)] dt
    x_t'  = mean + sigma_t sqrt(|dt|) z,          z ~ N(0, I)

so each step is a Gaussian ``N(mean, sigma_t^2 |dt| I)`` whose log-density is the policy's
log-probability of that step. Noise level: Flow-GRPO's ``sigma_t = a sqrt(t / (1 - t))``
(``schedule="flow_grpo"``; at t = 1 the first step reads ``t`` at the next grid level, as its
code does, to stay finite) or a constant ``sigma_t = a`` (``schedule="constant"``, DanceGRPO's eta).
``a = 0`` is the ODE.

Everything here imports only torch.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSchedule = Literal["flow_grpo", "constant"]
StepSubset = Literal["all", "random", "first"]


# ---- the SDE ------------------------------------------------------------------------------
def sde_sigmas(sigmas: torch.Tensor, a: float, schedule: NoiseSchedule = "flow_grpo") -> torch.Tensor:
    """The diffusion coefficient ``sigma_t`` [N] at the first N of the sampler's ``sigmas`` [N+1].

    ``flow_grpo``: ``a sqrt(t / (1 - t))``, with t = 1 replaced by the largest level below 1 in the
    denominator (Flow-GRPO's code); ``constant``: ``a`` at every step.
    """
    t = sigmas[:-1].double()  # [N]
    if schedule == "constant":
        return torch.full_like(t, float(a)).to(sigmas.dtype)
    if schedule != "flow_grpo":
        raise ValueError(f"train.grpo.noise_schedule {schedule!r} is unknown: use flow_grpo or constant")
    below = sigmas[(sigmas < 1.0) & (sigmas > 0.0)]
    cap = float(below.max()) if below.numel() else 0.5
    denom = torch.where(t >= 1.0, torch.full_like(t, 1.0 - cap), 1.0 - t)
    return (a * torch.sqrt(t / denom)).to(sigmas.dtype)


def sde_mean_std(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float,
                 sigma: float) -> tuple[torch.Tensor, float]:
    """Mean [B,...] and standard deviation (a float) of the SDE step from ``t`` down to ``t_next``.

    ``x``, ``v``: [B,...] latent and velocity at ``t``; ``sigma``: ``sigma_t``. Zero ``sigma`` is the
    ODE's Euler step with std 0.
    """
    dt = float(t_next) - float(t)  # < 0
    t = float(t)
    drift = v + (sigma ** 2 / (2.0 * t)) * (x + (1.0 - t) * v) if sigma > 0 else v
    return x + drift * dt, float(sigma) * math.sqrt(-dt)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float,
                      reduce: Literal["sum", "mean"] = "sum") -> torch.Tensor:
    """log N(x; mean, std^2 I) per sample: [B,...] -> [B], summed over the other dims (the density)
    or averaged (``mean``: Flow-GRPO's per-element log-probability, which keeps ratios of
    high-dimensional latents in a usable range)."""
    per_elem = -((x - mean) ** 2) / (2.0 * std ** 2) - math.log(std) - 0.5 * math.log(2.0 * math.pi)
    dims = tuple(range(1, x.ndim))
    return per_elem.sum(dims) if reduce == "sum" else per_elem.mean(dims)


def sde_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, sigma: float,
             noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One SDE step: ``(x_next, mean, std)``; ``noise`` [B,...] standard normal (None: the mean, the ODE step)."""
    mean, std = sde_mean_std(x, v, t, t_next, sigma)
    if noise is None or std == 0.0:
        return mean, mean, std
    return mean + std * noise, mean, std


def sde_sample(velocity: Velocity, eps: torch.Tensor, sigmas: torch.Tensor, stds: torch.Tensor,
               noise: Callable[[int], torch.Tensor], reduce: Literal["sum", "mean"] = "mean",
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the SDE from ``eps`` (at ``sigmas[0]``) down ``sigmas`` [N+1], no grad.

    ``stds``: ``sigma_t`` [N] (:func:`sde_sigmas`); ``noise(k)``: the standard normal [B,...] of step k.
    Steps with ``sigma_t = 0`` (and the last step into t = 0 where the noise would be added to the
    clean sample) are taken by the mean. Returns the chain ``[N+1, B,...]`` (latents[0] = eps,
    latents[-1] = x0) and the log-probabilities ``[N, B]`` of each step (0 for deterministic steps).
    """
    xs, logps = [eps], []
    x = eps
    with torch.no_grad():
        for k in range(len(sigmas) - 1):
            t, t_next, sigma = float(sigmas[k]), float(sigmas[k + 1]), float(stds[k])
            v = velocity(x, sigmas[k].expand(x.shape[0]).to(x))
            stochastic = sigma > 0 and t_next > 0
            x_next, mean, std = sde_step(x, v, t, t_next, sigma, noise(k) if stochastic else None)
            logps.append(gaussian_log_prob(x_next, mean, std, reduce) if stochastic
                         else torch.zeros(x.shape[0], device=x.device))
            xs.append(x_next)
            x = x_next
    return torch.stack(xs), torch.stack(logps)


def step_log_prob(velocity: Velocity, x: torch.Tensor, x_next: torch.Tensor, t: float, t_next: float,
                  sigma: float, reduce: Literal["sum", "mean"] = "mean") -> tuple[torch.Tensor, torch.Tensor, float]:
    """log p_theta(x_next | x) [B] of one SDE step, with grad through ``velocity``; also the mean and std."""
    v = velocity(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype))
    mean, std = sde_mean_std(x, v, t, t_next, sigma)
    return gaussian_log_prob(x_next, mean, std, reduce), mean, std


def stochastic_steps(sigmas: torch.Tensor, stds: torch.Tensor) -> list[int]:
    """The steps that carry a log-probability: ``sigma_t > 0`` and not the step into t = 0."""
    return [k for k in range(len(sigmas) - 1) if float(stds[k]) > 0 and float(sigmas[k + 1]) > 0]


# ---- groups and the objective -------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                     clip: float | None = None, global_std: bool = False) -> torch.Tensor:
    """Advantages [P*G]: rewards [P*G] (groups of ``group_size`` consecutive) normalised within each group.

    ``(r - mean_g) / (std_g + eps)`` with the population std, so each group has mean 0 and
    variance 1 (a group of equal rewards gets zeros: ``eps`` guards the division). ``clip``
    bounds |A| (DanceGRPO's ``adv_clip_max``). ``global_std``: divide by the std of all P*G rewards
    instead (DiffusionNFT's and AWM's ``global_std``), so groups keep their relative spread.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.reshape(-1, group_size).double()  # [P, G]
    std = r.std(unbiased=False) if global_std else r.std(1, unbiased=False, keepdim=True)
    a = (r - r.mean(1, keepdim=True)) / (std + eps)
    if clip is not None:
        a = a.clamp(-clip, clip)
    return a.reshape(-1).to(rewards.dtype)


def clipped_objective(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                      clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate as a loss to minimise: ``mean(max(-A r, -A clip(r, 1-c, 1+c)))``, and r.

    ``r = exp(log_prob - old_log_prob)`` [B]; where the ratio is outside ``[1-c, 1+c]`` on the side
    the advantage pushes towards, the clipped term wins and the gradient is zero.
    """
    ratio = torch.exp(log_prob - old_log_prob.detach())  # [B]
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped).mean(), ratio


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: float) -> torch.Tensor:
    """The exact KL(N(mean, std^2) || N(ref_mean, std^2)) of one SDE step, per element averaged: [B,...] -> [B].

    ``std`` is the step's standard deviation ``sigma_t * sqrt(|dt|)`` (:func:`sde_mean_std`), so this is
    ``|mean - ref_mean|^2 / (2 sigma_t^2 |dt|)``. Flow-GRPO's KL term divides by ``2 sigma_t^2`` only: this
    one is ``1 / |dt|`` times theirs (about N times at N even steps), so a Flow-GRPO ``beta`` does not
    transfer: multiply it by the trained steps' ``|dt|`` for the same penalty.
    """
    return (((mean - ref_mean) ** 2) / (2.0 * std ** 2)).mean(tuple(range(1, mean.ndim)))


# ---- which steps train, and the noise ------------------------------------------------------
def train_steps(candidates: Sequence[int], subset: StepSubset, count: int | None,
                generator: torch.Generator | None = None) -> list[int]:
    """The sampler steps an update trains on, in sampling order.

    ``all``: every candidate; ``random``: ``count`` of them without repeats (DanceGRPO's
    timestep fraction); ``first``: the first ``count`` (Flow-GRPO-Fast's early, high-noise steps).
    """
    candidates = list(candidates)
    if subset == "all" or count is None or count >= len(candidates):
        return candidates
    if subset == "first":
        return candidates[:count]
    if subset == "random":
        pick = torch.randperm(len(candidates), generator=generator)[:count].sort().values
        return [candidates[int(i)] for i in pick]
    raise ValueError(f"train.grpo.steps {subset!r} is unknown: use all, random or first")


def group_seeds(sample_seeds: Sequence[Sequence[int]], shared: bool) -> list[int]:
    """Flatten per-prompt member seeds [P][G] into [P*G]; ``shared``: every member takes its group's first seed."""
    return [group[0] if shared else s for group in sample_seeds for s in group]
