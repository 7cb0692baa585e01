"""AWM, advantage-weighted matching (Xue et al., arXiv 2509.25050).

Conventions as in :mod:`srpo.grpo`. The pretraining flow-matching loss, on the policy's own clean
samples noised again with fresh ``eps``, weighted by each sample's group advantage:

    L = E_{t, eps}[ A * w(t, e) ],      e = mean((v_theta(x_t, t) - (eps - x0))^2)

so a sample better than its group's mean is fitted (its probability raised) and a worse one
unfitted. ``w`` is a time weighting of the error: ``uniform`` (e), ``t`` (t e), ``t2`` (t^2 e) or
the authors' default generalised Huber ``ghuber``: ``t ((e + 1e-10)^p - 1e-10^p) / p`` with
``p = 0.25``, which grows slowly in e, so badly-fitted samples do not dominate.

The authors write ``-w`` as a log-probability and optimise PPO's clipped ratio objective
``mean(max(-A rho, -A clip(rho)))``, ``rho = exp(-w + w_old)``; on policy (one optimizer step per
batch, their setting) ``rho = 1`` and its gradient is ``A grad w``: the gradient of the loss above
(:func:`ratio_objective` is that form, for the test that checks the equality). Regularisers:
``velocity_l2`` to the frozen base (``beta``) and to a soft-updated EMA of the policy (``ema_beta``),
from :mod:`srpo.nft`. Everything here imports only torch.
"""

from __future__ import annotations

from typing import Literal

import torch

from srpo.grpo import clipped_objective

Weighting = Literal["uniform", "t", "t2", "ghuber"]
GHUBER_EPS = 1e-10  # the authors' offset inside the power (keeps the gradient at e = 0 finite)


def flow_matching_error(v: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``mean((v - (eps - x0))^2)`` per sample [B]: the plain flow-matching error of ``v`` [B,...]."""
    return ((v - (eps - x0)) ** 2).mean(tuple(range(1, v.ndim)))


def weighted_error(err: torch.Tensor, t: torch.Tensor, weighting: Weighting = "ghuber",
                   power: float = 0.25) -> torch.Tensor:
    """The time-weighted error ``w(t, e)`` [B] from ``err`` [B] and levels ``t`` [B] (see the module)."""
    if weighting == "uniform":
        return err
    if weighting == "t":
        return err * t
    if weighting == "t2":
        return err * t ** 2
    if weighting == "ghuber":
        if power <= 0:
            raise ValueError(f"train.awm.ghuber_power {power} must be > 0 (the authors use 0.25)")
        floor = GHUBER_EPS ** power
        return ((err + GHUBER_EPS) ** power - floor) * t / power
    raise ValueError(f"train.awm.weighting {weighting!r} is unknown: use uniform, t, t2 or ghuber")


def scaled_advantages(advantages: torch.Tensor, clip: float, max_abs: float) -> torch.Tensor:
    """``clip(A, -c, c) * max_abs / c`` [B]: the authors clip at ``c = 5`` and rescale onto [-1, 1]."""
    if clip <= 0:
        raise ValueError(f"train.awm.advantage_clip {clip} must be > 0")
    return advantages.clamp(-clip, clip) * (max_abs / clip)


def awm_loss(weighted: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``mean(A * w)`` over the batch [B] -> scalar: the advantage-weighted matching loss. Equal advantages
    ``a`` give ``a`` times the (weighted) flow-matching loss; ``A = 0`` gives no gradient."""
    return (advantages.detach() * weighted).mean()


def ratio_objective(weighted: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """The authors' form: PPO's clipped objective on the log-probability ``-w`` against its detached self
    (the on-policy ratio 1). Its value is ``-mean(A)``; its gradient equals :func:`awm_loss`'s."""
    log_prob = -weighted  # [B]
    return clipped_objective(log_prob, log_prob.detach(), advantages, clip)[0]


def stratified_steps(num_steps: int, fraction: float, count: int,
                     generator: torch.Generator | None = None) -> list[int]:
    """Sampler step indices to train: ``count`` strata of ``[1, int(num_steps * fraction)]``, one uniform
    index from each (the authors' ``discrete_wo_init``; index 0, t = 1, is left out). All samples of a
    batch share them; the level of index k is ``sigmas[k]``."""
    top = int(num_steps * fraction)
    if not 1 <= count <= top - 1:
        raise ValueError(f"train.awm.num_train_steps {count} must be in [1, {top - 1}]: the strata split the "
                         f"steps 1..{top} (num_steps {num_steps} x timestep_fraction {fraction}) into whole steps")
    bounds = torch.linspace(1, top, count + 1, dtype=torch.float64).long()  # [count+1]
    lo, hi = bounds[:-1], bounds[1:]
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    return (lo + (u * (hi - lo)).long()).tolist()
