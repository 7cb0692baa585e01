"""The policy-gradient maths (srpo.grpo): the SDE step's density and marginals, advantages, the clipped objective."""

import math

import pytest
import torch

from srpo import grpo
from srpo.schedules import sigma_schedule

MU, S0 = 1.5, 0.5  # toy data x0 ~ N(MU, S0^2) per element


def toy_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact velocity E[eps - x0 | x_t] of Gaussian data: linear in x."""
    t = t.view(-1, *[1] * (x.ndim - 1)).double()
    m, var = (1 - t) * MU, (1 - t) ** 2 * S0 ** 2 + t ** 2
    dx = x.double() - m
    return (t / var * dx - (MU + (1 - t) * S0 ** 2 / var * dx)).float()


def true_moments(t: float) -> tuple[float, float]:
    return (1 - t) * MU, math.sqrt((1 - t) ** 2 * S0 ** 2 + t ** 2)


def test_the_step_log_prob_is_the_gaussian_density_by_hand():
    g = torch.Generator().manual_seed(0)
    x, v, z = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    t, t_next, a = 0.8, 0.7, 0.7
    sigma = a * math.sqrt(t / (1 - t))
    x_next, mean, std = grpo.sde_step(x, v, t, t_next, sigma, z)
    dt = t_next - t
    by_hand_mean = x + (v + sigma ** 2 / (2 * t) * (x + (1 - t) * v)) * dt
    by_hand_std = sigma * math.sqrt(-dt)
    torch.testing.assert_close(mean, by_hand_mean)
    assert std == pytest.approx(by_hand_std)
    density = torch.distributions.Normal(by_hand_mean, by_hand_std).log_prob(x_next).sum((1, 2, 3))
    torch.testing.assert_close(grpo.gaussian_log_prob(x_next, mean, std, "sum"), density)
    torch.testing.assert_close(grpo.gaussian_log_prob(x_next, mean, std, "mean"), density / 32)
    # with grad through the velocity: the same density
    logp, _, _ = grpo.step_log_prob(lambda xx, tt: v, x, x_next, t, t_next, sigma, "sum")
    torch.testing.assert_close(logp, density)


def test_zero_noise_is_the_ode_euler_step():
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    x_next, mean, std = grpo.sde_step(x, v, 0.6, 0.5, 0.0, torch.randn(2, 3))
    torch.testing.assert_close(x_next, x - 0.1 * v)
    assert std == 0.0


@pytest.mark.parametrize("schedule, a", [("flow_grpo", 0.7), ("constant", 0.5)])
def test_the_sde_keeps_the_odes_marginals_on_a_linear_toy_velocity(schedule, a):
    """Monte Carlo, 20000 samples (standard error ~0.007): at every step the SDE's mean and std match the
    exact marginal N((1-t) mu, (1-t)^2 s0^2 + t^2) within 0.03 (mean) and 0.06 (std, the discretisation of
    the first high-noise steps), as the ODE's do; a wrong sign of the correction misses by far more."""
    sigmas = sigma_schedule(40, 3.0)
    stds = grpo.sde_sigmas(sigmas, a, schedule)
    g = torch.Generator().manual_seed(0)
    eps, noise = torch.randn(20000, 1, generator=g), torch.randn(40, 20000, 1, generator=g)
    sde, logps = grpo.sde_sample(toy_velocity, eps, sigmas, stds, lambda k: noise[k])
    ode, _ = grpo.sde_sample(toy_velocity, eps, sigmas, torch.zeros(40), lambda k: None)
    assert logps.shape == (40, 20000) and bool((logps[-1] == 0).all())  # the step into t = 0 is deterministic
    for k, t in enumerate(sigmas.tolist()):
        mean, std = true_moments(t)
        for chain in (sde, ode):
            assert abs(float(chain[k].mean()) - mean) < 0.03, (k, t)
            assert abs(float(chain[k].std()) - std) < 0.06, (k, t)
    # the negative control: the same noise added to the ODE's step without the score correction loses the marginal
    x = eps
    for k in range(39):
        _, std_k = grpo.sde_mean_std(x, x, float(sigmas[k]), float(sigmas[k + 1]), float(stds[k]))
        x = x + (sigmas[k + 1] - sigmas[k]) * toy_velocity(x, sigmas[k].expand(20000)) + std_k * noise[k]
    assert abs(float(x.std()) - true_moments(float(sigmas[39]))[1]) > 0.09  # beyond the 0.06 tolerance


def test_flow_grpo_noise_is_finite_at_t_1_and_grows_with_t():
    sigmas = sigma_schedule(10, 3.0)
    stds = grpo.sde_sigmas(sigmas, 0.7)
    assert torch.isfinite(stds).all() and stds.shape == (10,)
    assert bool((stds[:-1] >= stds[1:]).all())
    assert float(stds[1]) == pytest.approx(0.7 * math.sqrt(float(sigmas[1]) / (1 - float(sigmas[1]))), rel=1e-5)


def test_advantages_are_zero_mean_unit_variance_per_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0, -1.0, 5.0, 0.0, 2.0])
    adv = grpo.group_advantages(rewards, 4, clip=None).reshape(3, 4)
    torch.testing.assert_close(adv.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv[[0, 2]].var(1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    assert bool((adv[1] == 0).all())  # equal rewards: zeros, not NaN (eps guard)
    assert float(grpo.group_advantages(torch.tensor([0.0, 0, 0, 100]), 4, clip=1.0).max()) == 1.0
    with pytest.raises(ValueError, match="groups of 4"):
        grpo.group_advantages(torch.zeros(6), 4)


def test_the_clipped_objectives_gradient_vanishes_outside_the_clip_range():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old = torch.zeros(4)
    # ratios 1.5 (A>0, above 1+c), 1.05 (A>0, inside), 0.5 (A<0, below 1-c), 0.95 (A<0, inside)
    logp = torch.log(torch.tensor([1.5, 1.05, 0.5, 0.95])).requires_grad_(True)
    loss, ratio = grpo.clipped_objective(logp, old, adv, clip=0.2)
    loss.backward()
    assert logp.grad[0] == 0 and logp.grad[2] == 0
    assert logp.grad[1] == pytest.approx(-1.05 / 4) and logp.grad[3] == pytest.approx(0.95 / 4)
    # on the side the clip does not guard, the gradient stays (pessimistic bound)
    logp2 = torch.log(torch.tensor([0.5, 1.5])).requires_grad_(True)
    grpo.clipped_objective(logp2, torch.zeros(2), torch.tensor([1.0, -1.0]), 0.2)[0].backward()
    assert bool((logp2.grad != 0).all())


def test_ratio_is_one_and_the_gradient_is_the_policy_gradient_on_policy():
    logp = torch.randn(5, requires_grad=True)
    adv = torch.randn(5)
    loss, ratio = grpo.clipped_objective(logp, logp.detach(), adv, clip=1e-4)
    assert bool((ratio == 1).all())
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 5)


def test_kl_of_equal_means_is_zero_and_grows_quadratically():
    m = torch.randn(2, 3, 4)
    assert bool((grpo.gaussian_kl(m, m, 0.3) == 0).all())
    torch.testing.assert_close(grpo.gaussian_kl(m + 0.2, m, 0.1), torch.full((2,), 2.0))


def test_step_subsets():
    steps = list(range(8))
    assert grpo.train_steps(steps, "all", None) == steps
    assert grpo.train_steps(steps, "first", 3) == [0, 1, 2]
    pick = grpo.train_steps(steps, "random", 3, torch.Generator().manual_seed(1))
    assert len(pick) == 3 and pick == sorted(set(pick)) and set(pick) <= set(steps)
    assert pick == grpo.train_steps(steps, "random", 3, torch.Generator().manual_seed(1))
    assert grpo.group_seeds([[1, 2], [3, 4]], shared=True) == [1, 1, 3, 3]
    assert grpo.group_seeds([[1, 2], [3, 4]], shared=False) == [1, 2, 3, 4]


def test_global_std_divides_every_group_by_the_std_of_all_rewards():
    rewards = torch.tensor([1.0, 3.0, 10.0, 30.0])
    adv = grpo.group_advantages(rewards, 2, eps=0.0, clip=None, global_std=True)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -10.0, 10.0]) / rewards.std(unbiased=False))
    # groups keep their relative spread (per-group std would give both +-1)
    torch.testing.assert_close(grpo.group_advantages(rewards, 2, eps=0.0), torch.tensor([-1.0, 1.0, -1.0, 1.0]))
