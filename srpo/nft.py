"""DiffusionNFT: reinforcement on the forward process (Zheng et al., arXiv 2509.16117).

Conventions as in :mod:`srpo.grpo`: ``x_t = (1 - t) x0 + t eps``, the velocity targets
``u = eps - x0``. No likelihood and no sampler trajectory: a rollout gives clean images ``x0`` and
their rewards, which are normalised to an *optimality probability* ``r in [0, 1]``. The clean images
are noised again with fresh ``eps`` at a level ``t`` and the flow-matching loss contrasts two
*implicit* policies built from the trained velocity ``v_theta`` and the old (sampling) one ``v_old``:

    v+ = (1 - beta) v_old + beta v_theta          (implicit positive policy)
    v- = (1 + beta) v_old - beta v_theta          (implicit negative policy)
    L  = E[ r ||v+ - u||^2 + (1 - r) ||v- - u||^2 ]

Writing ``v_theta = v_old + w``: ``v+- = v_old +- beta w`` and the minimiser at each ``x_t`` is

    beta w* = E[(2 r - 1)(u - v_old) | x_t]  =  2 alpha(x_t) (v_pos - v_old)   when v_old = E[u | x_t],

with ``alpha(x_t) = E[r | x_t]`` and ``v_pos`` the velocity of the reward-tilted data ``r p_old``:
the paper's optimum ``v* = v_old + (2 / beta) Delta``, ``Delta = alpha (v_pos - v_old)``.
Positive samples pull ``v_theta`` towards them, negative ones push it away, both through ``v_old``'s
reflection.

The authors' code also weights each sample's squared error by its own detached mean absolute error
(``adaptive``), draws the training levels from the sampler's own grid, and after each epoch
moves the old policy softly towards the trained one (:func:`soft_update_`). Everything here
imports only torch.
"""

from __future__ import annotations

from typing import Iterable

import torch

from srpo.direct_align import _per_sample  # a scalar or [B] level as [B,1,...]

ADAPTIVE_FLOOR = 1e-5  # the authors' floor on the adaptive weight's denominator


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


# ---- rewards -> optimality probability ------------------------------------------------------
def optimality_probability(advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """``r = clip(A, -c, c) / (2 c) + 1/2`` in [0, 1] [B]: the advantage mapped linearly onto an optimality
    probability, ``A = 0`` (a group's mean) is ``r = 1/2``, ``A >= c`` is certainly optimal."""
    if clip <= 0:
        raise ValueError(f"train.nft.advantage_clip {clip} must be > 0: it maps advantages onto [0, 1]")
    a = advantages.clamp(-clip, clip)
    return (a / clip / 2.0 + 0.5).clamp(0.0, 1.0)


# ---- the implicit policies and the loss ----------------------------------------------------
def implicit_velocities(v: torch.Tensor, v_old: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v+, v-)`` [B,...]: ``(1 - beta) v_old + beta v`` and ``(1 + beta) v_old - beta v``.

    ``v_old`` is detached (the old policy is a fixed target); the gradient reaches ``v`` with
    ``+beta`` through the positive and ``-beta`` through the negative policy.
    """
    v_old = v_old.detach()
    return (1.0 - beta) * v_old + beta * v, (1.0 + beta) * v_old - beta * v


def matching_error(v: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float,
                   adaptive: bool) -> torch.Tensor:
    """Per-sample error [B] of velocity ``v`` [B,...] against the clean ``x0`` at ``x_t``.

    Plain: ``mean((v - u)^2)`` with ``u = (x_t - x0) / t`` (= ``eps - x0``; t > 0, the levels of
    :func:`train_levels` are). Adaptive (the authors'):
    on the clean-image prediction ``x0hat = x_t - t v``, ``mean((x0hat - x0)^2) / sg(mean|x0hat - x0|)``
    with the denominator floored at 1e-5; since ``x0hat - x0 = -t (v - u)`` that is
    ``t mean((v - u)^2) / mean|v - u|``: each sample's loss is scaled by the inverse of its own error.
    """
    tt = _per_sample(t, x_t)
    if not adaptive:
        u = (x_t - x0) / tt
        return ((v - u) ** 2).mean(_dims(v))
    err = x_t - tt * v - x0  # [B,...] x0hat - x0
    with torch.no_grad():
        weight = err.double().abs().mean(_dims(err), keepdim=True).clamp(min=ADAPTIVE_FLOOR).to(err.dtype)
    return (err ** 2 / weight).mean(_dims(err))


def nft_loss(v: torch.Tensor, v_old: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float,
             r: torch.Tensor, beta: float, adaptive: bool = True, scale: float = 1.0) -> torch.Tensor:
    """DiffusionNFT's policy loss, a scalar: ``scale * mean_B[r e(v+) + (1 - r) e(v-)]``.

    ``v``: the trained velocity at ``(x_t, t)`` [B,...] (with grad); ``v_old``: the old policy's there;
    ``r`` [B]: optimality probabilities (:func:`optimality_probability`); ``e``: :func:`matching_error`.
    The authors' code scales by ``advantage_clip / beta`` (``scale``; see :class:`srpo.config.NFTConfig`).
    """
    v_pos, v_neg = implicit_velocities(v, v_old, beta)
    per_sample = r * matching_error(v_pos, x_t, x0, t, adaptive) + (1.0 - r) * matching_error(v_neg, x_t, x0, t, adaptive)
    return scale * per_sample.mean()


def velocity_l2(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """``mean((v - v_ref)^2)`` per sample [B]: the KL-like penalty to a frozen reference velocity
    (DiffusionNFT's and AWM's ``Uniform`` KL term; ``v_ref`` detached)."""
    return ((v - v_ref.detach()) ** 2).mean(_dims(v))


def optimal_velocity(v_old: torch.Tensor, targets: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """The minimiser of the plain loss at one ``x_t``: ``v_old + E[(2 r - 1)(u - v_old)] / beta``.

    ``targets`` [M,...]: the velocities ``u`` of M posterior samples of x0 given this ``x_t`` (equally
    weighted), ``r`` [M] their optimality probabilities, ``v_old`` [...]. With ``v_old`` the posterior
    mean of ``u`` this is the paper's ``v_old + (2 / beta) alpha (v_pos - v_old)``.
    """
    w = (2.0 * r - 1.0).view(-1, *([1] * (targets.ndim - 1)))
    return v_old + (w * (targets - v_old)).mean(0) / beta


# ---- which levels train ---------------------------------------------------------------------
def train_levels(sigmas: torch.Tensor, batch: int, count: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Levels ``t`` [B, count] for the forward-process loss: each sample takes ``count`` distinct levels
    of the sampler's grid ``sigmas[:-1]`` [N] (t = 1 included, t = 0 not) in its own random order.

    The authors train ``int(N * timestep_fraction)`` of the N levels, one backward per level.
    """
    levels = sigmas[:-1]  # [N]
    n = levels.numel()
    if not 1 <= count <= n:
        raise ValueError(f"train.nft.num_train_levels {count} must be in [1, {n}] (the sampler's levels above 0)")
    order = torch.stack([torch.randperm(n, generator=generator) for _ in range(batch)])  # [B, N]
    return levels[order[:, :count]]


# ---- the old policy ---------------------------------------------------------------------------
def old_policy_decay(update: int, flat: int, rate: float, cap: float) -> float:
    """The soft-update decay after ``update`` optimizer steps: 0 before ``flat``, then ``(update - flat)
    rate`` capped at ``cap``. 0 makes the old policy the trained one (fully on-policy)."""
    if update < flat:
        return 0.0
    return min((update - flat) * rate, cap)


@torch.no_grad()
def soft_update_(old: Iterable[torch.Tensor], new: Iterable[torch.Tensor], decay: float) -> None:
    """In place: ``old <- decay * old + (1 - decay) * new``, parameter by parameter."""
    old, new = list(old), list(new)
    if len(old) != len(new):
        raise ValueError(f"soft_update_ got {len(old)} old and {len(new)} new tensors: pass matching parameter lists")
    for o, n in zip(old, new):
        o.mul_(decay).add_(n.detach().to(o.dtype), alpha=1.0 - decay)
