"""Direct-Align: recover the clean image from one model step and the known noise.

A rollout gives the clean latent ``x0`` and the noise it started from, ``eps``. We inject that
same noise at a level ``t`` and let the model take a single step of size ``d`` to or from it;
the rest of the way is removed analytically because ``eps`` is known:

    denoise:    s = t + d,  x_s = (1-s) x0 + s eps,  x_t = x_s - d * v(x_s, s)
    inversion:  a = t - d,  x_a = (1-a) x0 + a eps,  x_t = x_a + d * v(x_a, a)
    both:       x0hat = (x_t - t * eps) / (1 - t)

With a perfect velocity ``v = eps - x0`` both give ``x0hat == x0`` exactly, at any t. The
standard one-step prediction ``x0hat = x_s - s * v`` (ReFL) multiplies the model's error by
``s / (1 - s)``-like factors; Direct-Align by ``d / (1 - t)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``v = velocity(x [B,...], sigma [B])``: the policy's velocity, targeting ``eps - x0``."""


def _per_sample(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or [B] noise level against ``like`` [B, ...]."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(like.shape[0])
    return sigma.view(-1, *([1] * (like.ndim - 1)))  # [B,1,...]


def add_noise(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``x_sigma = (1 - sigma) * x0 + sigma * eps``."""
    s = _per_sample(sigma, x0)
    return (1.0 - s) * x0 + s * eps


def remove_known_noise(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Invert ``add_noise`` given the noise: ``x0hat = (x_t - t * eps) / (1 - t)``."""
    tt = _per_sample(t, x_t)
    return (x_t - tt * eps) / (1.0 - tt)


def denoise_recover(
    velocity: Velocity, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float, d_sigma: float
) -> torch.Tensor:
    """Denoise branch: start at ``t + d``, one model step down to ``t``, remove the rest."""
    s = torch.as_tensor(t, dtype=x0.dtype, device=x0.device) + d_sigma
    s = s.expand(x0.shape[0]) if s.ndim == 0 else s  # [B]
    x_s = add_noise(x0, eps, s).detach()  # no grad into the injected state
    x_t = x_s - d_sigma * velocity(x_s, s)
    return remove_known_noise(x_t, eps, t)


def inversion_recover(
    velocity: Velocity, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float, d_sigma: float
) -> torch.Tensor:
    """Inversion branch: start at ``t - d``, one model step *up* to ``t``, remove the rest."""
    a = torch.as_tensor(t, dtype=x0.dtype, device=x0.device) - d_sigma
    a = a.expand(x0.shape[0]) if a.ndim == 0 else a  # [B]
    x_a = add_noise(x0, eps, a).detach()
    x_t = x_a + d_sigma * velocity(x_a, a)
    return remove_known_noise(x_t, eps, t)


def both_branches_recover(
    velocity: Velocity, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float, d_sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoise and inversion branches as one model call on a batch of 2B.

    The same maths as :func:`denoise_recover` and :func:`inversion_recover` (equal up to float
    rounding): the first B samples start at ``t + d`` and step down, the last B start at ``t - d``
    and step up. ``velocity`` must take the doubled batch (its conditioning repeated twice).
    Returns ``(x0hat_denoise [B,...], x0hat_inversion [B,...])``.
    """
    b = x0.shape[0]
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    t = t.expand(b) if t.ndim == 0 else t  # [B]
    start = torch.cat([t + d_sigma, t - d_sigma])  # [2B]
    step = torch.cat([torch.full_like(t, -d_sigma), torch.full_like(t, d_sigma)])  # [2B] down, then up
    x0_2, eps_2 = torch.cat([x0, x0]), torch.cat([eps, eps])  # [2B,...]
    x_start = add_noise(x0_2, eps_2, start).detach()
    x_t = x_start + _per_sample(step, x_start) * velocity(x_start, start)
    denoised, inverted = remove_known_noise(x_t, eps_2, torch.cat([t, t])).chunk(2)
    return denoised, inverted


def one_step_predict(velocity: Velocity, x_s: torch.Tensor, s: torch.Tensor | float) -> torch.Tensor:
    """Standard one-step prediction (ReFL): ``x0hat = x_s - s * v(x_s, s)``."""
    s_t = torch.as_tensor(s, dtype=x_s.dtype, device=x_s.device)
    s_t = s_t.expand(x_s.shape[0]) if s_t.ndim == 0 else s_t
    return x_s - _per_sample(s_t, x_s) * velocity(x_s, s_t)


@torch.no_grad()
def euler_sample(velocity: Velocity, eps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the ODE from ``sigmas[0]`` (noise) to ``sigmas[-1]`` with Euler steps, no grad."""
    x = eps
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s) * velocity(x, s.expand(x.shape[0]).to(x))
    return x


def euler_sample_with_grad_tail(velocity: Velocity, eps: torch.Tensor, sigmas: torch.Tensor, k: int) -> torch.Tensor:
    """Euler ODE like :func:`euler_sample`, with gradients kept through the last ``k`` steps only.

    DRaFT-K: ``k = 1`` backpropagates through the final sampler step, ``k = len(sigmas) - 1``
    through the whole chain.
    """
    num_steps = len(sigmas) - 1
    if not 1 <= k <= num_steps:
        raise ValueError(f"k must be in [1, {num_steps}] (the number of sampler steps), got {k}")
    x = euler_sample(velocity, eps, sigmas[: num_steps - k + 1]).detach()
    for s, s_next in zip(sigmas[num_steps - k : -1], sigmas[num_steps - k + 1 :]):
        x = x + (s_next - s) * velocity(x, s.expand(x.shape[0]).to(x))
    return x


# ---- DRTune: the whole chain, the gradient stopped at each step's input --------------------------
def drtune_sample(velocity: Velocity, eps: torch.Tensor, sigmas: torch.Tensor, train_steps: Sequence[int],
                  stop_step: int | None = None) -> torch.Tensor:
    """DRTune's rollout (Wu et al., arXiv 2405.00760): the clean-image prediction the reward reads, [B,...].

    Euler steps ``x_{k+1} = x_k + (s_{k+1} - s_k) v(sg(x_k), s_k)`` from ``eps`` down ``sigmas`` [N+1]: every
    model call sees a *detached* input, and only the ``train_steps`` calls keep their graph, so the
    gradient reaches each trained step's velocity through the update's additive path alone (no
    Jacobian of the model w.r.t. its input, no chain of them). At ``stop_step`` (default the last step,
    N - 1) the prediction ``x0hat = x_k - s_k v(sg(x_k), s_k)`` is returned (early stop: the reward reads a
    one-step prediction from step k); at the last step that is the Euler step into t = 0, the image.
    FlowBP draws ``stop_step = drtune_stop_step(N, m)``, then ``train_steps = drtune_train_steps(stop + 1, K)``.
    """
    num_steps = len(sigmas) - 1
    stop = num_steps - 1 if stop_step is None else stop_step
    if not 0 <= stop < num_steps:
        raise ValueError(f"train.drtune stop step {stop} must be in [0, {num_steps - 1}] (the sampler's steps)")
    train = set(train_steps)
    if not train <= set(range(stop + 1)):
        raise ValueError(f"train.drtune trained steps {sorted(train)} must lie in [0, {stop}] (the steps run "
                         "before the reward reads the image)")

    def step_velocity(x: torch.Tensor, k: int) -> torch.Tensor:  # v(sg(x_k), s_k) [B,...], a graph only if trained
        with torch.set_grad_enabled(k in train and torch.is_grad_enabled()):
            return velocity(x.detach(), sigmas[k].expand(x.shape[0]).to(x))

    x = eps
    for k in range(stop):
        x = x + (sigmas[k + 1] - sigmas[k]).to(x) * step_velocity(x, k)
    return x - sigmas[stop].to(x) * step_velocity(x, stop)


def drtune_train_steps(num_steps: int, count: int, generator: torch.Generator | None = None) -> list[int]:
    """``count`` equally spaced steps of ``0 .. num_steps - 1`` with a random start: stride
    ``num_steps // count``, start uniform in ``[0, num_steps - 1 - (count - 1) stride]`` (FlowBP's DRTune)."""
    if count < 1:
        raise ValueError(f"train.drtune.num_train_steps {count} must be >= 1")
    count = min(count, num_steps)
    if count == num_steps:
        return list(range(num_steps))
    stride = max(1, num_steps // count)
    last_start = num_steps - 1 - (count - 1) * stride
    start = int(torch.randint(0, last_start + 1, (1,), generator=generator))
    return [start + i * stride for i in range(count)]


def drtune_stop_step(num_steps: int, early_stop: int, generator: torch.Generator | None = None) -> int:
    """The step whose prediction the reward reads: one of the last ``early_stop`` steps, uniformly
    (``early_stop = 0``: always the last step, the full chain)."""
    if early_stop <= 0:
        return num_steps - 1
    back = int(torch.randint(1, min(early_stop, num_steps) + 1, (1,), generator=generator))
    return num_steps - back
