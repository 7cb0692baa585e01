"""Differentiable CLIP preprocessing: shapes, value range, crop position, gradients."""

from __future__ import annotations

import pytest
import torch

from srpo.rewards import CLIP_MEAN, CLIP_STD, preprocess_for_clip


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("hw", [(48, 64), (64, 48), (20, 20), (32, 32), (100, 33)])
def test_output_is_square_at_size(hw):
    images = torch.rand(2, 3, *hw)
    assert preprocess_for_clip(images, 32).shape == (2, 3, 32, 32)


def test_values_stay_in_normalised_unit_range():
    images = torch.rand(3, 3, 57, 41)  # noisy images make bicubic overshoot, which is clamped
    out = preprocess_for_clip(images, 32)
    low, high = _normalise(torch.zeros(1, 3, 1, 1)), _normalise(torch.ones(1, 3, 1, 1))
    assert (out >= low - 1e-6).all() and (out <= high + 1e-6).all()


def test_square_input_at_size_is_only_normalised():
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(preprocess_for_clip(images, 32), _normalise(images))


def test_centre_crop_of_a_wide_image():
    images = torch.rand(1, 3, 32, 64)  # shorter side already 32: no resize, crop columns 16..47
    torch.testing.assert_close(preprocess_for_clip(images, 32), _normalise(images[..., 16:48]))


def test_mean_and_std_are_used():
    images = torch.full((1, 3, 8, 8), 0.5)
    out = preprocess_for_clip(images, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.testing.assert_close(out, torch.zeros_like(out))


def test_gradient_reaches_the_input():
    images = torch.rand(2, 3, 48, 40).mul(0.8).add(0.1).requires_grad_(True)
    preprocess_for_clip(images, 32).square().sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 4, 32, 32)])
def test_wrong_shape_is_refused(shape):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        preprocess_for_clip(torch.rand(*shape), 32)


def test_downsizing_matches_pil_and_every_pixel_counts():
    """A 4.6x shrink (FLUX's 1024 px to CLIP's 224) must average, as PIL and torchvision do, not sample."""
    import numpy as np
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 1024, 1024, generator=g).mul(0.6).add(0.2)  # fine texture: aliasing shows most
    pil = Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    want = torch.from_numpy(np.asarray(pil.resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255)
    want = _normalise(want.permute(2, 0, 1)[None])
    quantised = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    got = preprocess_for_clip(quantised, 224)
    assert (got - want).abs().mean() < 0.02  # without antialiasing: ~0.5 on this image

    images.requires_grad_(True)
    preprocess_for_clip(images, 224).sum().backward()
    assert (images.grad != 0).float().mean() > 0.99  # no pixel is invisible to the reward
