"""Advantage-weighted matching (srpo.awm): the weighted flow-matching loss, its sign and scale, the authors' form."""

import pytest
import torch

from srpo import awm


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    theta = torch.randn(4, 3, 5, generator=g).requires_grad_(True)  # a free velocity per sample
    t = torch.tensor([0.2, 0.5, 0.7, 0.95])
    return x0, eps, theta, t


def test_the_flow_matching_error_by_hand():
    x0, eps = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    v = torch.tensor([[0.0, 1.0]])  # u = (-1, 2): error (1, -1)
    torch.testing.assert_close(awm.flow_matching_error(v, x0, eps), torch.tensor([1.0]))


def test_time_weightings_by_hand():
    err, t = torch.tensor([0.0, 0.5, 2.0]), torch.tensor([0.5, 0.5, 0.8])
    torch.testing.assert_close(awm.weighted_error(err, t, "uniform"), err)
    torch.testing.assert_close(awm.weighted_error(err, t, "t"), err * t)
    torch.testing.assert_close(awm.weighted_error(err, t, "t2"), err * t * t)
    p = 0.25
    by_hand = ((err + 1e-10) ** p - 1e-10 ** p) * t / p
    torch.testing.assert_close(awm.weighted_error(err, t, "ghuber", p), by_hand)
    assert float(awm.weighted_error(err, t, "ghuber")[0]) == 0.0  # no error, no loss
    with pytest.raises(ValueError, match="weighting 'huber' is unknown"):
        awm.weighted_error(err, t, "huber")


@pytest.mark.parametrize("a", [1.0, -0.5, 2.0])
def test_equal_advantages_give_the_plain_flow_matching_loss_times_the_advantage(batch, a):
    x0, eps, theta, t = batch
    err = awm.flow_matching_error(theta, x0, eps)
    loss = awm.awm_loss(awm.weighted_error(err, t, "uniform"), torch.full((4,), a))
    plain = ((theta - (eps - x0)) ** 2).mean()  # the pretraining loss over the batch
    torch.testing.assert_close(loss, a * plain)
    (grad,) = torch.autograd.grad(loss, theta)
    (plain_grad,) = torch.autograd.grad(plain, theta)
    torch.testing.assert_close(grad, a * plain_grad)


def test_the_sign_and_scale_of_the_advantage(batch):
    """A > 0 fits the sample (a small step lowers its error), A < 0 unfits it; the gradient is linear in A,
    and a zero advantage contributes nothing."""
    x0, eps, theta, t = batch
    adv = torch.tensor([1.0, -1.0, 0.0, 2.0])

    def grads(a):
        err = awm.flow_matching_error(theta, x0, eps)
        return torch.autograd.grad(awm.awm_loss(awm.weighted_error(err, t, "ghuber"), a), theta)[0]

    g = grads(adv)
    torch.testing.assert_close(grads(3 * adv), 3 * g)
    assert bool((g[2] == 0).all())
    with torch.no_grad():
        before = awm.flow_matching_error(theta, x0, eps)
        after = awm.flow_matching_error(theta - 1e-2 * g, x0, eps)
    assert after[0] < before[0] and after[3] < before[3]  # positive: fitted
    assert after[1] > before[1]  # negative: pushed away
    torch.testing.assert_close(after[2], before[2])


def test_the_authors_ratio_form_has_the_same_gradient_on_policy(batch):
    x0, eps, theta, t = batch
    adv = torch.tensor([0.7, -0.3, 1.0, -1.0])
    w = awm.weighted_error(awm.flow_matching_error(theta, x0, eps), t, "ghuber")
    (ours,) = torch.autograd.grad(awm.awm_loss(w, adv), theta, retain_graph=True)
    ratio_loss = awm.ratio_objective(w, adv, clip=1.0)
    assert float(ratio_loss.detach()) == pytest.approx(-float(adv.mean()))  # the ratio is 1: the value is -mean(A)
    (theirs,) = torch.autograd.grad(ratio_loss, theta)
    torch.testing.assert_close(ours, theirs)


def test_advantages_are_clipped_then_rescaled():
    adv = torch.tensor([-10.0, -2.5, 0.0, 5.0, 7.0])
    torch.testing.assert_close(awm.scaled_advantages(adv, 5.0, 1.0), torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="advantage_clip 0"):
        awm.scaled_advantages(adv, 0.0, 1.0)


def test_stratified_steps_take_one_step_from_each_stratum():
    strata = [(1, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]  # int(14 * 0.9) = 12, six strata of 1..12
    seen = set()
    for seed in range(50):
        steps = awm.stratified_steps(14, 0.9, 6, torch.Generator().manual_seed(seed))
        assert len(steps) == 6
        for k, (lo, hi) in zip(steps, strata):
            assert lo <= k < hi
        seen.update(steps)
    assert seen == set(range(1, 12))  # every step of the strata is drawn, t = 1 (step 0) never
    assert awm.stratified_steps(14, 0.9, 6, torch.Generator().manual_seed(3)) == \
        awm.stratified_steps(14, 0.9, 6, torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="num_train_steps 12 must be in"):
        awm.stratified_steps(14, 0.9, 12)
