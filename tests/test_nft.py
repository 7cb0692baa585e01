"""DiffusionNFT's maths (srpo.nft): the implicit policies, the loss by hand, its optimum on a toy problem."""

import math

import pytest
import torch

from srpo import nft
from srpo.schedules import sigma_schedule


def test_rewards_map_linearly_onto_optimality_probabilities():
    adv = torch.tensor([-10.0, -5.0, -2.5, 0.0, 2.5, 5.0, 7.0])
    torch.testing.assert_close(nft.optimality_probability(adv, 5.0),
                               torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))
    with pytest.raises(ValueError, match="advantage_clip 0"):
        nft.optimality_probability(adv, 0.0)


def test_the_implicit_velocities_by_hand_and_their_gradients():
    v = torch.tensor([[1.0, -2.0]], requires_grad=True)
    v_old = torch.tensor([[0.5, 1.0]], requires_grad=True)
    pos, neg = nft.implicit_velocities(v, v_old, beta=0.3)
    torch.testing.assert_close(pos, torch.tensor([[0.7 * 0.5 + 0.3 * 1.0, 0.7 * 1.0 - 0.3 * 2.0]]))
    torch.testing.assert_close(neg, torch.tensor([[1.3 * 0.5 - 0.3 * 1.0, 1.3 * 1.0 + 0.3 * 2.0]]))
    torch.testing.assert_close(pos + neg, 2 * v_old.detach())  # mirror images about the old policy
    (pos - 2 * neg).sum().backward()
    torch.testing.assert_close(v.grad, torch.full((1, 2), 0.3 + 2 * 0.3))  # +beta and -beta
    assert v_old.grad is None  # the old policy is a fixed target


def test_the_loss_on_hand_computed_tensors_plain_and_adaptive():
    # one sample of two elements at t = 0.5: x0 = (1, 0), eps = (0, 2) -> x_t = (0.5, 1), u = eps - x0 = (-1, 2)
    x0, eps, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), 0.5
    x_t = (1 - t) * x0 + t * eps
    v = torch.tensor([[0.0, 1.0]], requires_grad=True)
    v_old = torch.tensor([[-2.0, 2.0]])
    beta, r = 0.5, torch.tensor([0.8])
    # v+ = 0.5 v_old + 0.5 v = (-1, 1.5): error vs u (0, -0.5) -> mean sq 0.125, mean abs 0.25
    # v- = 1.5 v_old - 0.5 v = (-3, 2.5): error vs u (-2, 0.5) -> mean sq 2.125, mean abs 1.25
    plain = nft.nft_loss(v, v_old, x_t, x0, t, r, beta, adaptive=False)
    assert float(plain.detach()) == pytest.approx(0.8 * 0.125 + 0.2 * 2.125)
    # adaptive: t * mean sq / mean abs of the velocity error (the x0 error is -t times it)
    adaptive = nft.nft_loss(v, v_old, x_t, x0, t, r, beta, adaptive=True, scale=10.0)
    assert float(adaptive.detach()) == pytest.approx(10.0 * (0.8 * 0.5 * 0.125 / 0.25 + 0.2 * 0.5 * 2.125 / 1.25))
    # the plain gradient: d/dv [r mean(v+ - u)^2 + (1-r) mean(v- - u)^2] = (2 beta / D) [r e+ - (1 - r) e-]
    plain.backward()
    e_pos, e_neg = torch.tensor([[0.0, -0.5]]), torch.tensor([[-2.0, 0.5]])
    torch.testing.assert_close(v.grad, (2 * beta / 2) * (0.8 * e_pos - 0.2 * e_neg))


def test_the_adaptive_weight_is_detached_and_floored():
    x0, eps = torch.zeros(2, 3), torch.ones(2, 3)
    x_t = 0.3 * eps
    perfect = (eps - x0).clone().requires_grad_(True)
    err = nft.matching_error(perfect, x_t, x0, 0.3, adaptive=True)
    assert bool((err == 0).all())  # zero error over the 1e-5 floor: 0, not NaN
    err.sum().backward()
    assert bool(torch.isfinite(perfect.grad).all())
    # with the weight detached the gradient is 2 t (v - u) / (D mean|v - u|) * t, not that of t mean|v - u|
    v = (eps - x0 + torch.tensor([[0.1, -0.2, 0.3], [1.0, 1.0, 1.0]])).requires_grad_(True)
    nft.matching_error(v, x_t, x0, 0.3, adaptive=True).sum().backward()
    d = v.detach() - (eps - x0)
    expected = 2 * 0.3 ** 2 * d / (3 * 0.3 * d.abs().mean(1, keepdim=True))
    torch.testing.assert_close(v.grad, expected)


def posterior_plus(x_t: torch.Tensor, t: float) -> torch.Tensor:
    """P(x0 = +1 | x_t) for x0 uniform on {-1, +1}: x_t | x0 ~ N((1 - t) x0, t^2)."""
    return torch.sigmoid(2 * (1 - t) * x_t / t ** 2)


@pytest.mark.parametrize("beta", [1.0, 0.1])
@pytest.mark.parametrize("t", [0.3, 0.8])
def test_on_a_two_point_toy_the_loss_drives_the_velocity_to_the_papers_optimum(beta, t):
    """Old data x0 in {-1, +1} equally; only +1 is rewarded (r = 1, else 0). At each x_t the exact expected
    plain loss is minimised over a free velocity; the minimiser is v_old + (2 / beta) alpha (v_pos - v_old)
    with alpha = P(+1 | x_t) = E[r | x_t], v_old the old data's velocity and v_pos the rewarded data's."""
    x_t = torch.tensor([[-1.5], [-0.2], [0.0], [0.4], [1.2]], dtype=torch.float64)  # [5, 1] five states
    p = posterior_plus(x_t, t)  # [5, 1]
    plus, minus = torch.ones_like(x_t), -torch.ones_like(x_t)
    u_plus, u_minus = (x_t - plus) / t, (x_t - minus) / t  # u = eps - x0 = (x_t - x0) / t
    v_old = p * u_plus + (1 - p) * u_minus  # E[u | x_t]: the old policy is exact
    v = v_old.clone().requires_grad_(True)
    r_of = {+1: 1.0, -1: 0.0}  # the reward of each old sample
    weight_of = {+1: p.squeeze(1), -1: 1 - p.squeeze(1)}  # its posterior weight at each state [5]

    def expected_loss():  # sum over states of E_{x0 | x_t}[r e(v+) + (1 - r) e(v-)]
        v_pos, v_neg = nft.implicit_velocities(v, v_old, beta)
        total = 0.0
        for sign, x0 in [(+1, plus), (-1, minus)]:
            r = r_of[sign]
            e = r * nft.matching_error(v_pos, x_t, x0, t, False) + (1 - r) * nft.matching_error(v_neg, x_t, x0, t, False)
            total = total + (weight_of[sign] * e).sum()
        return total

    opt = torch.optim.LBFGS([v], lr=1.0, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = expected_loss()
        loss.backward()
        return loss

    opt.step(closure)
    alpha, v_pos = p, u_plus  # E[r | x_t]; the rewarded data (+1 only) has velocity (x_t - 1) / t
    paper = v_old + (2 / beta) * alpha * (v_pos - v_old)
    torch.testing.assert_close(v.detach(), paper, atol=1e-8, rtol=1e-8)
    # and the closed form of srpo.nft on the same posterior, drawn as weighted samples
    for i in range(5):
        m = 1000
        k = int(round(float(p[i]) * m))
        targets = torch.cat([u_plus[i].expand(k, 1), u_minus[i].expand(m - k, 1)])  # [m, 1]
        r = torch.cat([torch.ones(k), torch.zeros(m - k)]).double()
        est = nft.optimal_velocity(v_old[i], targets, r, beta)
        assert float(est) == pytest.approx(float(paper[i]), abs=2 / beta * 1e-3 * float((u_plus - u_minus)[i].abs()) + 1e-9)
    # the move is towards the rewarded data's velocity, by 2 alpha / beta of the gap
    gap = v_pos - v_old
    assert bool(((v.detach() - v_old) * gap >= 0).all())


def test_train_levels_are_distinct_levels_of_the_sampler_grid_in_per_sample_order():
    sigmas = sigma_schedule(10, 3.0)
    g = torch.Generator().manual_seed(0)
    levels = nft.train_levels(sigmas, batch=4, count=9, generator=g)
    assert levels.shape == (4, 9)
    grid = set(sigmas[:-1].tolist())
    for row in levels.tolist():
        assert len(set(row)) == 9 and set(row) <= grid
    assert not all(levels[0].tolist() == levels[i].tolist() for i in range(1, 4))  # own order per sample
    with pytest.raises(ValueError, match="num_train_levels 11"):
        nft.train_levels(sigmas, 1, 11)


def test_the_old_policy_decay_schedules_and_the_soft_update():
    assert nft.old_policy_decay(0, 0, 0.001, 0.5) == 0.0
    assert nft.old_policy_decay(100, 0, 0.001, 0.5) == pytest.approx(0.1)
    assert nft.old_policy_decay(10_000, 0, 0.001, 0.5) == 0.5
    assert nft.old_policy_decay(74, 75, 0.0075, 0.999) == 0.0  # the authors' type 2: flat, then a ramp
    assert nft.old_policy_decay(175, 75, 0.0075, 0.999) == pytest.approx(0.75)
    old, new = [torch.tensor([1.0, 2.0]), torch.tensor(4.0)], [torch.tensor([3.0, 0.0]), torch.tensor(0.0)]
    nft.soft_update_(old, new, 0.25)
    torch.testing.assert_close(old[0], torch.tensor([0.25 * 1 + 0.75 * 3, 0.25 * 2]))
    torch.testing.assert_close(old[1], torch.tensor(1.0))
    with pytest.raises(ValueError, match="matching parameter lists"):
        nft.soft_update_(old, new[:1], 0.5)


def test_velocity_l2_is_the_mean_squared_gap_per_sample():
    v = torch.tensor([[1.0, 3.0], [0.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[0.0, 1.0], [0.0, 2.0]], requires_grad=True)
    kl = nft.velocity_l2(v, ref)
    torch.testing.assert_close(kl, torch.tensor([(1 + 4) / 2, 4 / 2]))
    kl.sum().backward()
    assert ref.grad is None and math.isclose(float(v.grad[0, 1]), 2.0)
