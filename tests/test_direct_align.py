"""Direct-Align invariants: exact recovery with a perfect model, error scaling, gradient signs."""

import pytest
import torch

from srpo.direct_align import (add_noise, both_branches_recover, denoise_recover, drtune_sample, drtune_stop_step,
                               drtune_train_steps, euler_sample, inversion_recover, one_step_predict,
                               remove_known_noise)
from srpo.schedules import sigma_schedule, training_grid


@pytest.fixture
def sample():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    return x0, eps


def perfect_velocity(x0, eps):
    return lambda x, sigma: eps - x0


@pytest.mark.parametrize("t", training_grid(0, 49, 50, 3.0, 41).tolist()[1:])
def test_perfect_velocity_recovers_x0_exactly_on_both_branches(sample, t):
    x0, eps = sample
    v = perfect_velocity(x0, eps)
    d = 0.02 if t > 0.03 else t / 2
    assert torch.allclose(denoise_recover(v, x0, eps, t, min(d, 0.999 - t)), x0, atol=1e-10)
    assert torch.allclose(inversion_recover(v, x0, eps, t, d), x0, atol=1e-10)


def test_remove_known_noise_inverts_add_noise_per_sample(sample):
    x0, eps = sample
    t = torch.tensor([0.1, 0.5, 0.97])
    assert torch.allclose(remove_known_noise(add_noise(x0, eps, t), eps, t), x0)


def test_one_step_prediction_is_exact_only_for_a_perfect_model(sample):
    x0, eps = sample
    s = 0.9
    assert torch.allclose(one_step_predict(perfect_velocity(x0, eps), add_noise(x0, eps, s), s), x0)


@pytest.mark.parametrize("t", [0.2, 0.75, 0.95])
def test_model_error_is_scaled_by_d_over_one_minus_t_not_s(sample, t):
    """With v = (eps - x0) + delta: Direct-Align errs by d/(1-t)*delta, one-step by s*delta."""
    x0, eps = sample
    delta = 0.1 * torch.ones_like(x0)
    v = lambda x, sigma: eps - x0 + delta
    d = 0.02
    err_da = denoise_recover(v, x0, eps, t, d) - x0
    err_one = one_step_predict(v, add_noise(x0, eps, t + d), t + d) - x0
    assert torch.allclose(err_da, -d / (1 - t) * delta)
    assert torch.allclose(err_one, -(t + d) * delta)
    assert err_da.abs().max() < err_one.abs().max()


def test_gradient_through_velocity_has_opposite_signs_on_the_two_branches(sample):
    """For a linear reward r = <w, x0hat>: dr/dv = -d/(1-t) w (denoise), +d/(1-t) w (inversion)."""
    x0, eps = sample
    w = torch.randn_like(x0)
    t, d = 0.8, 0.02
    grads = {}
    for name, recover in [("denoise", denoise_recover), ("inversion", inversion_recover)]:
        v_param = (eps - x0).clone().requires_grad_(True)
        reward = (w * recover(lambda x, s: v_param, x0, eps, t, d)).sum()
        reward.backward()
        grads[name] = v_param.grad
    assert torch.allclose(grads["denoise"], -d / (1 - t) * w)
    assert torch.allclose(grads["inversion"], d / (1 - t) * w)


@pytest.mark.parametrize("t", [0.3, torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)])
def test_both_branches_in_one_call_equal_the_two_calls_values_and_gradients(sample, t):
    """One model call on [x_s; x_a] gives each branch's x0hat and the gradient of their sum."""
    x0, eps = sample
    w = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
    calls = []

    def v(x, sigma):  # depends on the state, the level and a parameter, per sample
        calls.append(x.shape[0])
        return torch.einsum("oc,bchw->bohw", w, torch.tanh(x)) * (1 + sigma.view(-1, 1, 1, 1))

    d = 0.05
    a, b = denoise_recover(v, x0, eps, t, d), inversion_recover(v, x0, eps, t, d)
    (grad_apart,) = torch.autograd.grad((a.square().sum() - 2 * b.sum()), w)
    fused_a, fused_b = both_branches_recover(v, x0, eps, t, d)
    (grad_fused,) = torch.autograd.grad((fused_a.square().sum() - 2 * fused_b.sum()), w)
    assert calls == [3, 3, 6]
    assert torch.allclose(fused_a, a, atol=1e-12) and torch.allclose(fused_b, b, atol=1e-12)
    assert torch.allclose(grad_fused, grad_apart, atol=1e-10)
    assert not torch.allclose(a, b)  # the branches differ: a swapped half would fail above


def test_no_gradient_flows_into_the_injected_state(sample):
    x0, eps = sample
    x0 = x0.clone().requires_grad_(True)
    seen = []

    def v(x, s):
        seen.append(x.requires_grad)
        return torch.zeros_like(x)

    denoise_recover(v, x0, eps, 0.5, 0.02)
    assert seen == [False]


def test_euler_sampler_follows_a_straight_path_exactly(sample):
    x0, eps = sample
    out = euler_sample(perfect_velocity(x0, eps), eps, sigma_schedule(7, 3.0).double())
    assert torch.allclose(out, x0)


def test_grad_tail_sampler_equals_the_plain_sampler_and_keeps_grad_only_in_the_tail(sample):
    x0, eps = sample
    sigmas = sigma_schedule(6, 3.0).double()
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    calls = []

    def v(x, s):
        calls.append(x.requires_grad)
        return scale * (eps - x0)

    from srpo.direct_align import euler_sample_with_grad_tail

    out = euler_sample_with_grad_tail(v, eps, sigmas, 2)
    assert torch.allclose(out, x0)
    assert calls == [False] * 4 + [False, True]  # the first tail step starts from a detached state
    out.sum().backward()
    # d out / d scale = sum over the two tail steps of (s_next - s) * (eps - x0)
    expected = ((sigmas[-1] - sigmas[-3]) * (eps - x0)).sum()
    assert scale.grad == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="k must be"):
        euler_sample_with_grad_tail(v, eps, sigmas, 7)


# ---- DRTune -------------------------------------------------------------------------------------
class StepwiseVelocity(torch.nn.Module):
    """``v_k(x, s) = a_k x + b_k (1 + s)`` with its own parameters per sampler step k (found from the level)."""

    def __init__(self, sigmas):
        super().__init__()
        self.sigmas = sigmas
        n = len(sigmas) - 1
        self.a = torch.nn.Parameter(torch.linspace(-0.5, 0.3, n, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.linspace(0.2, -0.4, n, dtype=torch.float64))
        self.inputs = {}  # step -> the input it saw

    def forward(self, x, s):
        k = int(torch.argmin((self.sigmas[:-1] - s[0]).abs()))
        self.inputs[k] = x
        return self.a[k] * x + self.b[k] * (1 + s.view(-1, *[1] * (x.ndim - 1)))


@pytest.mark.parametrize("train, stop", [([1, 4], None), ([0, 2, 5], 5), ([2], 3), ([], None)])
def test_drtune_gradients_reach_only_the_trained_steps_and_stop_at_each_input(sample, train, stop):
    """With detached inputs, out = x_{stop} - s_stop v_stop and x_{k+1} = x_k + dt_k v_k(sg(x_k)), so
    d<w, out>/d a_k = dt_k <w, x_k> and d/d b_k = dt_k (1 + s_k) sum(w) for a trained k < stop, with
    -s_stop in place of dt at the stop step, and exactly 0 for every other step."""
    x0, eps = sample
    sigmas = sigma_schedule(6, 3.0).double()
    v = StepwiseVelocity(sigmas)
    w = torch.randn_like(x0)
    out = drtune_sample(v, eps, sigmas, train, stop)
    stop = 5 if stop is None else stop
    assert sorted(v.inputs) == list(range(stop + 1))
    assert not any(x.requires_grad for x in v.inputs.values())  # every model input is detached
    if not train:
        assert not out.requires_grad  # nothing trained: no graph
        return
    (w * out).sum().backward()
    for k in range(6):
        if k in train:
            step = -sigmas[k] if k == stop else sigmas[k + 1] - sigmas[k]
            assert float(v.a.grad[k]) == pytest.approx(float(step * (w * v.inputs[k]).sum()), rel=1e-9)
            assert float(v.b.grad[k]) == pytest.approx(float(step * (1 + sigmas[k]) * w.sum()), rel=1e-9)
        else:
            assert float(v.a.grad[k]) == 0.0 and float(v.b.grad[k]) == 0.0


def test_drtune_values_are_the_plain_sampler_and_full_backprop_gives_other_gradients(sample):
    x0, eps = sample
    sigmas = sigma_schedule(6, 3.0).double()
    v = StepwiseVelocity(sigmas)
    out = drtune_sample(v, eps, sigmas, [0, 3, 5])
    assert torch.allclose(out, euler_sample(v, eps, sigmas))  # the last step's prediction is the image
    x3 = v.inputs[3]
    early = drtune_sample(v, eps, sigmas, [1], stop_step=3)
    assert torch.allclose(early, x3 - sigmas[3] * v(x3, sigmas[3].expand(3)))  # the one-step prediction at step 3
    # without the stop-gradient the gradient also flows through later steps' a_j x_j: it differs
    w = torch.randn_like(x0)
    (g_drtune,) = torch.autograd.grad((w * drtune_sample(v, eps, sigmas, [0])).sum(), v.a)
    x = eps
    for k in range(6):
        x = x + (sigmas[k + 1] - sigmas[k]) * v(x, sigmas[k].expand(3))
    (g_full,) = torch.autograd.grad((w * x).sum(), v.a)
    assert not torch.allclose(g_drtune[0], g_full[0])
    with pytest.raises(ValueError, match="must lie in"):
        drtune_sample(v, eps, sigmas, [4], stop_step=3)


def test_drtune_step_choices():
    starts, stops = set(), set()
    for seed in range(100):
        steps = drtune_train_steps(25, 3, torch.Generator().manual_seed(seed))
        assert len(steps) == 3 and steps[1] - steps[0] == steps[2] - steps[1] == 8 and steps[2] <= 24
        starts.add(steps[0])
        stops.add(drtune_stop_step(25, 10, torch.Generator().manual_seed(seed)))
    assert starts == set(range(9))  # start uniform in [0, 24 - 2 * 8]
    assert stops == set(range(15, 25))  # one of the last 10 steps
    assert drtune_train_steps(4, 9) == [0, 1, 2, 3]
    assert drtune_stop_step(25, 0) == 24  # no early stop: the final image
