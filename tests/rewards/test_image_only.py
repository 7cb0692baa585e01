"""The image-only relative reward (supplement S1): bias cancellation, seeding, refusals, Aesthetic v2.5."""

from __future__ import annotations

import pytest
import torch

from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.combine import RewardTerm, term_reward
from srpo.rewards.image_only import (check_image_only_form, image_only_relative_reward, image_only_reward,
                                     noised_copy)
from srpo.world.shapes import draw

NOISE = 0.03


def saturation(images: torch.Tensor) -> torch.Tensor:
    """Mean chroma ``max_c - min_c`` per image: ``[B, 3, H, W]`` -> ``[B]``."""
    return (images.amax(1) - images.amin(1)).mean((1, 2))


def detail(images: torch.Tensor) -> torch.Tensor:
    """A noise-sensitive quality: minus the mean smoothed absolute Laplacian (noise raises it)."""
    lap = (4 * images[..., 1:-1, 1:-1] - images[..., :-2, 1:-1] - images[..., 2:, 1:-1]
           - images[..., 1:-1, :-2] - images[..., 1:-1, 2:])
    return -torch.sqrt(lap ** 2 + 1e-4).mean((1, 2, 3))


def biased_scorer(bias_weight: float):
    """An image-only scorer with a planted preference for saturation on top of a detail term."""
    return lambda images: detail(images) + bias_weight * saturation(images)


def desaturated(base: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``grey + alpha * (base - grey)``: the saturation knob a policy could turn (``alpha`` 1: unchanged)."""
    grey = base.mean(1, keepdim=True)
    return grey + alpha * (base - grey)


def knob_gradient(form: str, bias_weight: float, seed: int) -> float:
    """d reward / d alpha at alpha = 0.8 on shapes-world images, summed over the batch."""
    base, _, _ = draw(8, seed=seed)
    alpha = torch.tensor(0.8, requires_grad=True)
    images = desaturated(base, alpha)
    r = image_only_reward(form, biased_scorer(bias_weight), images, NOISE, torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(r.sum(), alpha)
    return float(grad)


def test_relative_form_pushes_the_planted_bias_far_less_than_the_absolute_form():
    absolute = [knob_gradient("plain", 2.0, seed) for seed in range(4)]
    relative = [knob_gradient("image_relative", 2.0, seed) for seed in range(4)]
    assert all(a > 0 for a in absolute)  # the absolute reward is hacked by saturating
    assert max(abs(r) for r in relative) < 0.2 * min(absolute)
    # without a bias the knob's absolute gradient is small: it is the bias that the absolute form follows
    unbiased = [knob_gradient("plain", 0.0, seed) for seed in range(4)]
    assert max(abs(u) for u in unbiased) < 0.5 * min(absolute)


def test_relative_form_still_has_a_pixel_gradient_and_detaching_the_copy_would_not_cancel():
    base, _, _ = draw(4, seed=7)
    images = base.clone().requires_grad_(True)
    score = biased_scorer(2.0)
    r = image_only_relative_reward(score, images, NOISE, torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(r.sum(), images)
    assert grad.abs().sum() > 0
    # a detached copy (a baseline, not a relative reward) keeps the absolute gradient, bias and all
    noisy = noised_copy(images, NOISE, torch.Generator().manual_seed(0)).detach()
    (grad_detached,) = torch.autograd.grad((score(images) - score(noisy)).sum(), images)
    (grad_abs,) = torch.autograd.grad(score(images).sum(), images)
    assert torch.allclose(grad_detached, grad_abs)
    assert not torch.allclose(grad, grad_abs)


def test_noise_is_seeded_and_both_terms_are_scored():
    images = torch.rand(2, 3, 8, 8)
    a = noised_copy(images, 0.1, torch.Generator().manual_seed(3))
    b = noised_copy(images, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, images)
    assert (a - images).std() == pytest.approx(0.1, rel=0.2)
    calls = []
    r = image_only_relative_reward(lambda x: calls.append(x.shape[0]) or x.mean((1, 2, 3)), images, 0.1,
                                   torch.Generator().manual_seed(3))
    assert calls == [4] and r.shape == (2,)
    assert torch.allclose(r, images.mean((1, 2, 3)) - a.mean((1, 2, 3)))


@pytest.mark.parametrize("form", ["sgp", "srp", "cfg", "weighted"])
def test_forms_that_need_text_are_refused(form):
    with pytest.raises(ValueError, match="reads no text: use reward_form 'image_relative'"):
        check_image_only_form(form)
    with pytest.raises(ValueError, match="noise_level"):
        noised_copy(torch.rand(1, 3, 4, 4), 0.0, torch.Generator())


def test_aesthetic_v25_as_a_training_reward_both_branches(private_cache):
    reward = load_reward(RewardConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny"))
    assert reward.is_image_only and not any(p.requires_grad for p in reward.parameters())
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    term = RewardTerm(name="aesthetic", reward=reward, form="image_relative", noise_level=NOISE)
    denoise = term_reward(term, images, ["ignored", "ignored"], branch="denoise", step=3)
    inversion = term_reward(term, images, ["ignored", "ignored"], branch="inversion", step=3)
    assert torch.allclose(denoise, -inversion)  # no words to swap: the inversion branch's penalty is -r
    (grad,) = torch.autograd.grad(denoise.sum(), images)
    assert grad.abs().sum() > 0
    from srpo.evaluation.config import MetricConfig
    from srpo.evaluation.metrics import load_metric

    metric = load_metric(MetricConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny"))
    assert torch.allclose(metric.score(images.detach(), ["", ""]), reward.score_images(images.detach()), atol=1e-6)
