"""Image statistics on constructed images: each moves the way the hack it watches would move it."""

import pytest
import torch
import torch.nn.functional as F

from srpo.image_stats import IMAGE_STATS, batch_means, image_statistics, luma, rgb_to_hsv


def _images(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)  # [N, 3, H, W]


def _grey(images):
    return luma(images)[:, None].expand(-1, 3, -1, -1).clone()  # [N, 3, H, W]


def _blur(images, k=5):
    kernel = torch.ones(3, 1, k, k) / k ** 2
    return F.conv2d(F.pad(images, [k // 2] * 4, mode="reflect"), kernel, groups=3)


def test_every_statistic_is_per_image():
    stats = image_statistics(_images(4))
    assert set(stats) == set(IMAGE_STATS)
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in stats.values())
    means = batch_means(stats)
    assert means["brightness"] == pytest.approx(float(stats["brightness"].mean()))


def test_a_saturated_image_is_more_colourful_and_saturated_than_its_greyscale():
    images = _images()
    colour, grey = image_statistics(images), image_statistics(_grey(images))
    assert (colour["colourfulness"] > grey["colourfulness"] + 0.05).all()
    assert (colour["saturation"] > grey["saturation"] + 0.1).all()
    assert grey["colourfulness"].abs().max() < 1e-5 and grey["saturation"].abs().max() < 1e-5
    # the same luma: brightness and contrast do not see colour
    torch.testing.assert_close(colour["brightness"], grey["brightness"], atol=1e-5, rtol=0)
    torch.testing.assert_close(colour["contrast"], grey["contrast"], atol=1e-5, rtol=0)


def test_pushing_saturation_raises_colourfulness_and_saturation():
    images = _images()
    grey = _grey(images)
    pushed = (grey + 1.6 * (images - grey)).clamp(0, 1)  # over-saturated
    base, hacked = image_statistics(images), image_statistics(pushed)
    assert (hacked["colourfulness"] > base["colourfulness"]).all()
    assert (hacked["saturation"] > base["saturation"]).all()


def test_brightness_and_contrast_follow_their_transforms():
    images = 0.25 + 0.5 * _images()
    base = image_statistics(images)
    brighter = image_statistics(images + 0.2)
    stretched = image_statistics(((images - 0.5) * 1.8 + 0.5).clamp(0, 1))
    torch.testing.assert_close(brighter["brightness"], base["brightness"] + 0.2, atol=1e-5, rtol=0)
    torch.testing.assert_close(brighter["contrast"], base["contrast"], atol=1e-5, rtol=0)
    assert (stretched["contrast"] > 1.5 * base["contrast"]).all()


def test_blur_lowers_and_sharpening_raises_high_frequency_energy():
    images = _blur(_images(), 3)
    base = image_statistics(images)["hf_energy"]
    blurred = image_statistics(_blur(images, 5))["hf_energy"]
    sharpened = image_statistics((images + 1.5 * (images - _blur(images, 3))).clamp(0, 1))["hf_energy"]
    assert (blurred < 0.5 * base).all()
    assert (sharpened > base).all()
    assert ((base > 0) & (base < 1)).all()


def test_high_frequency_share_of_pure_tones():
    x = torch.arange(32.0)
    slow = (0.5 + 0.4 * torch.cos(2 * torch.pi * x / 16)).expand(32, 32)  # 1/16 cycle per pixel
    fast = (0.5 + 0.4 * torch.cos(2 * torch.pi * 3 * x / 8)).expand(32, 32)  # 3/8 cycle per pixel
    images = torch.stack([slow, fast])[:, None].expand(-1, 3, -1, -1)
    hf = image_statistics(images, ["hf_energy"])["hf_energy"]
    assert hf[0] < 1e-4 and hf[1] > 1 - 1e-4


def test_hsv_of_primaries_and_unknown_names():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    h, s, v = rgb_to_hsv(red)
    assert (h.item(), s.item(), v.item()) == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown image statistic 'sharpness'"):
        image_statistics(red, ["sharpness"])


def test_saturation_is_the_mean_hsv_saturation():
    images = _images(2, 16)
    images[0, :, :4] = 0.0  # black pixels: saturation 0
    torch.testing.assert_close(image_statistics(images, ["saturation"])["saturation"],
                               rgb_to_hsv(images)[1].mean((1, 2)))
