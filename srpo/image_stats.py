"""Image statistics that catch the reward hacks SRPO is known for, torch only.

Each statistic maps ``images [N, 3, H, W]`` (floats in ``[0, 1]``) to ``[N]`` per-image values:

- ``colourfulness``: Hasler and Suesstrunk (2003), ``sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2)``
  over the opponent channels ``rg = R - G`` and ``yb = (R + G) / 2 - B`` (on the ``[0, 1]`` scale: the
  paper's 0-255 numbers divided by 255);
- ``saturation``: mean HSV saturation;
- ``brightness``: mean luma (Rec. 601 weights);
- ``contrast``: standard deviation of the luma;
- ``hf_energy``: share of the luma's spectral energy (mean removed) above ``HF_CUTOFF`` cycles per pixel
  (radial frequency): over-sharpened, "oily" textures raise it, blur lowers it.

The training guard records their batch means and compares them with the base model's images on
the same prompts and seeds (drift); ``rgb_to_hsv`` is also the shapes-world grader's colour reading.
"""

from __future__ import annotations

from typing import Callable

import torch

LUMA = (0.299, 0.587, 0.114)  # Rec. 601
HF_CUTOFF = 0.25  # cycles per pixel: half the Nyquist frequency


def rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[N, 3, H, W]`` in [0, 1] -> hue in degrees, saturation, value, each ``[N, H, W]``."""
    images = images.clamp(0, 1)
    r, g, b = images.unbind(1)
    v, _ = images.max(1)
    mn, _ = images.min(1)
    c = v - mn
    safe = torch.where(c > 0, c, torch.ones_like(c))
    h = torch.where(v == r, ((g - b) / safe) % 6, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(c > 0, h * 60.0, torch.zeros_like(h))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    return h, s, v


def luma(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, H, W]`` Rec. 601 luma."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    return torch.einsum("nchw,c->nhw", images, weights)


def colourfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler-Suesstrunk colourfulness per image: ``[N, 3, H, W]`` -> ``[N]`` (0 for grey images)."""
    r, g, b = images.flatten(2).unbind(1)  # each [N, H*W]
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    offset = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return spread + 0.3 * offset


def saturation(images: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation per image: ``[N, 3, H, W]`` -> ``[N]`` (the S of :func:`rgb_to_hsv`, without hue)."""
    v, mn = images.amax(1), images.amin(1)  # [N, H, W]
    return ((v - mn) / v.clamp_min(1e-12)).mean((1, 2))


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean luma per image: ``[N, 3, H, W]`` -> ``[N]``."""
    return luma(images).mean((1, 2))


def contrast(images: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the luma per image: ``[N, 3, H, W]`` -> ``[N]``."""
    return luma(images).flatten(1).std(1, unbiased=False)


def hf_energy(images: torch.Tensor, cutoff: float = HF_CUTOFF) -> torch.Tensor:
    """Share of each image's luma energy (mean removed) above ``cutoff`` cycles/pixel: ``[N]`` in [0, 1]."""
    y = luma(images)
    y = y - y.mean((1, 2), keepdim=True)  # [N, H, W]
    power = torch.fft.rfft2(y).abs() ** 2  # [N, H, W//2+1]
    fy = torch.fft.fftfreq(y.shape[1], device=y.device)[:, None]
    fx = torch.fft.rfftfreq(y.shape[2], device=y.device)[None, :]
    high = ((fy ** 2 + fx ** 2).sqrt() > cutoff).to(power.dtype)  # [H, W//2+1]
    # rfft2 holds the columns 1..W/2-1 once for two conjugate halves: weight them twice
    weight = torch.full_like(fx, 2.0).expand_as(high).clone()
    weight[:, 0] = 1.0
    if y.shape[2] % 2 == 0:
        weight[:, -1] = 1.0
    total = (power * weight).sum((1, 2))
    return (power * weight * high).sum((1, 2)) / total.clamp_min(1e-12)


IMAGE_STATS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "colourfulness": colourfulness, "saturation": saturation, "brightness": brightness,
    "contrast": contrast, "hf_energy": hf_energy,
}


@torch.no_grad()
def image_statistics(images: torch.Tensor, names=tuple(IMAGE_STATS)) -> dict[str, torch.Tensor]:
    """The named statistics of ``images`` [N, 3, H, W] in [0, 1]: ``{name: [N]}`` (float32, CPU)."""
    unknown = [n for n in names if n not in IMAGE_STATS]
    if unknown:
        raise ValueError(f"unknown image statistic {unknown[0]!r}: choose from {', '.join(IMAGE_STATS)}")
    images = images.detach().float().clamp(0, 1)
    return {name: IMAGE_STATS[name](images).cpu() for name in names}


def batch_means(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """``{name: [N]}`` -> ``{name: mean}``."""
    return {name: float(values.mean()) for name, values in stats.items()}
