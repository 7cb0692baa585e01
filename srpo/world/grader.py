"""Read a shapes-world image's attributes back from its pixels.

No learning: colours are classified by hue (HSV), brightness by the mean HSV value, saturation
by the mean HSV saturation, the shape by how much of its bounding box the foreground fills
(square ~1, circle ~pi/4, triangle ~1/2). The background colour is voted by the pixels of a
thin border ring; the foreground is what lies far (in RGB) from the background's colour, and its
colour is voted by the farthest pixels, so that blended edges cannot outvote the shape's core.

Thresholds sit halfway between the world's classes (:class:`~srpo.world.shapes.WorldSpec`), so
a generated image counts as "bright" when it is closer to the world's bright images than to its
dark ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from srpo.image_stats import rgb_to_hsv
from srpo.world.shapes import BINARY_ATTRIBUTES, COLOURS, SHAPES, WorldSpec, parse_prompt

MIN_CHROMA = 0.04  # pixels greyer than this carry no colour vote
MIN_FOREGROUND = 0.02  # share of the image the foreground must cover to be graded at all
MIN_DISTANCE = 0.05  # RGB distance from the background below which no foreground is seen


@dataclass
class Grades:
    """What the grader read from ``N`` images."""

    fg: torch.Tensor  # [N] long colour index, -1 when no foreground was found
    bg: torch.Tensor  # [N] long colour index
    shape: torch.Tensor  # [N] long shape index, -1 when no foreground was found
    value: torch.Tensor  # [N] mean HSV value (brightness)
    saturation: torch.Tensor  # [N] mean HSV saturation
    bright: torch.Tensor  # [N] bool
    vivid: torch.Tensor  # [N] bool
    foreground: torch.Tensor | None = None  # [N, H, W] bool: the pixels read as the shape (none found: all False)

    def __len__(self) -> int:
        return int(self.fg.shape[0])

    def flag(self, attribute: str) -> torch.Tensor:
        """The bool reading of a binary attribute ("brightness" -> bright, "saturation" -> vivid)."""
        return {"brightness": self.bright, "saturation": self.vivid}[attribute]


def hue_classes(h: torch.Tensor) -> torch.Tensor:
    """Nearest palette colour (index into COLOUR_NAMES) of each hue in degrees."""
    palette = torch.tensor(list(COLOURS.values()))
    d = (h[..., None] - palette).abs() % 360.0
    return torch.minimum(d, 360.0 - d).argmin(-1)


def _vote(classes: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """Weighted majority class per image: ``classes``/``weights`` [N, P] -> [N]."""
    tallies = torch.zeros(classes.shape[0], n).scatter_add_(1, classes, weights)
    return tallies.argmax(1)


def grade(images: torch.Tensor, spec: WorldSpec = WorldSpec(), ring: int = 2) -> Grades:
    """Grade ``images`` ``[N, 3, H, W]`` in [0, 1]."""
    images = images.detach().float().cpu()
    n, _, hgt, wid = images.shape
    h, s, v = rgb_to_hsv(images)
    chroma = s * v
    cls = hue_classes(h)  # [N, H, W]
    weight = (chroma > MIN_CHROMA).float() * chroma
    border = torch.ones(hgt, wid, dtype=torch.bool)
    border[ring:-ring, ring:-ring] = False
    ncol = len(COLOURS)
    bg = _vote(cls[:, border], weight[:, border], ncol)  # [N]
    # foreground: the pixels farthest (in RGB) from the background's mean colour; its colour is voted
    # by the farthest of them, so blended edge pixels (red + blue = purple) cannot outvote the core
    ring_is_bg = (cls == bg[:, None, None]) & border  # [N, H, W]
    weights = ring_is_bg.float() + 1e-6 * border.float()
    bg_rgb = (images * weights[:, None]).sum((2, 3)) / weights.sum((1, 2))[:, None]  # [N, 3]
    dist = (images - bg_rgb[:, :, None, None]).norm(dim=1)  # [N, H, W]
    dist[:, border] = 0.0
    far = dist.flatten(1).amax(1)  # [N]
    fg_pixels = dist >= 0.5 * far[:, None, None]
    core = dist >= 0.8 * far[:, None, None]
    fg = _vote(cls.reshape(n, -1), (weight * core + 1e-6 * core).reshape(n, -1), ncol)
    area = fg_pixels.float().mean((1, 2))
    found = (far >= MIN_DISTANCE) & (area >= MIN_FOREGROUND)
    fg = torch.where(found, fg, torch.full_like(fg, -1))
    shape = torch.full_like(fg, -1)
    for i in torch.nonzero(found).flatten().tolist():
        rows = torch.nonzero(fg_pixels[i].any(1)).flatten()
        cols = torch.nonzero(fg_pixels[i].any(0)).flatten()
        box = float((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
        fill = float(fg_pixels[i].sum()) / box
        shape[i] = SHAPES.index("triangle") if fill < 0.64 else SHAPES.index("circle") if fill < 0.89 else SHAPES.index("square")
    value, saturation = v.mean((1, 2)), s.mean((1, 2))
    bright_cut = (spec.dark_value[1] + spec.bright_value[0]) / 2
    vivid_cut = (spec.muted_saturation[1] + spec.vivid_saturation[0]) / 2
    return Grades(fg=fg, bg=bg, shape=shape, value=value, saturation=saturation,
                  bright=value > bright_cut, vivid=saturation > vivid_cut,
                  foreground=fg_pixels & found[:, None, None])


def fidelity(grades: Grades, prompts: Sequence[str]) -> dict[str, float]:
    """Share of images whose graded attributes match what their prompts name.

    Keys: ``fg``, ``bg``, ``colours`` (both right), ``shape``, and each binary attribute that
    the prompts name (only over the prompts naming it).
    """
    parsed = [parse_prompt(p) for p in prompts]
    fg = torch.tensor([p["fg"] for p in parsed])
    bg = torch.tensor([p["bg"] for p in parsed])
    shape = torch.tensor([p["shape"] for p in parsed])
    ok_fg, ok_bg = grades.fg == fg, grades.bg == bg
    out = {"fg": ok_fg.float().mean().item(), "bg": ok_bg.float().mean().item(),
           "colours": (ok_fg & ok_bg).float().mean().item(), "shape": (grades.shape == shape).float().mean().item()}
    for attribute in BINARY_ATTRIBUTES:
        named = [(i, p[attribute]) for i, p in enumerate(parsed) if attribute in p]
        if named:
            idx = torch.tensor([i for i, _ in named])
            want = torch.tensor([w for _, w in named])
            out[attribute] = (grades.flag(attribute)[idx] == want).float().mean().item()
    return out


def shares(grades: Grades) -> dict[str, float]:
    """Share of images read as bright and as vivid, and the mean value / saturation."""
    return {"bright": grades.bright.float().mean().item(), "vivid": grades.vivid.float().mean().item(),
            "value": grades.value.mean().item(), "saturation": grades.saturation.mean().item()}
