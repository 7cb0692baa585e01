"""MixGRPO and Flow-GRPO-Fast (srpo.mixgrpo): the SDE window, its schedule, and GRPO's log-probabilities in it."""

import math

import pytest
import torch

from srpo import grpo, mixgrpo
from srpo.schedules import sigma_schedule


def toy_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear velocity of the state and the level (so a different input gives a different step)."""
    t = t.view(-1, *[1] * (x.ndim - 1))
    return torch.tanh(x) * (1 + t) - 0.5 * x


def test_the_sliding_window_moves_on_its_schedule_and_rolls_back():
    candidates = list(range(24))  # 25 sampler steps: all but the step into t = 0 are stochastic

    def window(update, stride=1, roll_back=True):  # MixGRPO's defaults: 4 steps, moved every 25 updates
        return mixgrpo.sliding_window(update, candidates, 4, 25, stride, roll_back)

    assert window(0) == window(24) == [0, 1, 2, 3]  # 25 updates on the first window
    assert window(25) == window(49) == [1, 2, 3, 4]  # then one step towards t = 0
    assert window(25 * 20) == [20, 21, 22, 23]  # the last whole window ...
    assert window(25 * 21) == [0, 1, 2, 3]  # ... then back to the start
    assert window(25 * 21, roll_back=False) == [20, 21, 22, 23]  # or it stays at the end
    assert window(25 * 3, stride=2) == [6, 7, 8, 9]
    assert window(25 * 10, stride=2) == [20, 21, 22, 23]
    assert window(25 * 11, stride=2) == [0, 1, 2, 3]  # start 22 would pass the last whole window: back to 0
    assert window(25 * 7, stride=3) == [0, 1, 2, 3]  # 0, 3, ..., 18, then 0 (21 would pass 20)
    for u in range(0, 2000, 7):  # the window is always whole and consecutive
        w = window(u, stride=3)
        assert len(w) == 4 and w == list(range(w[0], w[0] + 4)) and set(w) <= set(candidates)
    with pytest.raises(ValueError, match="window_size 30 must be in"):
        mixgrpo.sliding_window(0, candidates, 30, 25, 1)


def test_the_branch_window_is_uniform_in_its_range():
    candidates = list(range(9))  # 10 steps
    starts = set()
    for seed in range(200):
        w = mixgrpo.branch_window(candidates, 2, 0, 5, torch.Generator().manual_seed(seed))
        assert len(w) == 2 and w[1] == w[0] + 1 and 0 <= w[0] <= 3
        starts.add(w[0])
    assert starts == {0, 1, 2, 3}  # first half of 10 steps: [0, 5) holds windows starting at 0..3
    with pytest.raises(ValueError, match="branch_range"):
        mixgrpo.branch_window(candidates, 3, 4, 6)


@pytest.mark.parametrize("window", [[0, 1, 2, 3], [3, 4], [6]])
def test_only_the_windows_steps_are_stochastic_and_carry_a_log_probability(window):
    sigmas = sigma_schedule(10, 3.0)
    stds = mixgrpo.window_stds(grpo.sde_sigmas(sigmas, 0.7), window)
    assert grpo.stochastic_steps(sigmas, stds) == window  # the steps that are trained
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(3, 2, 4, generator=g)
    noise_a, noise_b = torch.randn(10, 3, 2, 4, generator=g), torch.randn(10, 3, 2, 4, generator=g)
    chain_a, logp_a = grpo.sde_sample(toy_velocity, eps, sigmas, stds, lambda k: noise_a[k])
    chain_b, logp_b = grpo.sde_sample(toy_velocity, eps, sigmas, stds, lambda k: noise_b[k])
    for k in range(10):
        if k in window:
            assert bool((logp_a[k] != 0).all())
            assert not torch.allclose(chain_a[k + 1], chain_b[k + 1])  # other noise, other next state
        else:
            assert bool((logp_a[k] == 0).all())
            for chain in (chain_a, chain_b):  # an ODE step: the Euler step of its own input, noise or not
                x, t = chain[k], sigmas[k]
                torch.testing.assert_close(chain[k + 1], x + (sigmas[k + 1] - t) * toy_velocity(x, t.expand(3)))
    # before the window both chains are the same deterministic ODE path
    first = window[0]
    torch.testing.assert_close(chain_a[: first + 1], chain_b[: first + 1], rtol=0, atol=0)


def test_the_branch_steps_log_probabilities_equal_grpos_for_the_same_inputs():
    sigmas = sigma_schedule(10, 3.0)
    full = grpo.sde_sigmas(sigmas, 0.7)
    window = mixgrpo.branch_window(grpo.stochastic_steps(sigmas, full), 2, 0, 5, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(1)
    eps, noise = torch.randn(2, 3, 4, generator=g), torch.randn(10, 2, 3, 4, generator=g)
    chain, logps = grpo.sde_sample(toy_velocity, eps, sigmas, mixgrpo.window_stds(full, window), lambda k: noise[k])
    for k in window:
        t, t_next, s = float(sigmas[k]), float(sigmas[k + 1]), float(full[k])
        # GRPO's training-time log-probability of the same transition (with grad through the velocity)
        again, mean, std = grpo.step_log_prob(toy_velocity, chain[k], chain[k + 1], t, t_next, s)
        torch.testing.assert_close(logps[k], again)
        # and the full-SDE sampler's density of that step: a Gaussian with the SDE's mean and std
        v = toy_velocity(chain[k], sigmas[k].expand(2))
        by_hand_mean = chain[k] + (v + s ** 2 / (2 * t) * (chain[k] + (1 - t) * v)) * (t_next - t)
        by_hand_std = s * math.sqrt(t - t_next)
        density = torch.distributions.Normal(by_hand_mean, by_hand_std).log_prob(chain[k + 1]).mean((1, 2))
        torch.testing.assert_close(logps[k], density)
