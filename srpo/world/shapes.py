"""The shapes world: procedurally drawn images whose every attribute is known exactly.

A scene is one shape (circle, square, triangle) of a foreground colour on a background colour;
the whole image has a brightness (dark / bright) and a saturation (muted / vivid). Colours are
hues, so brightness and saturation can change without changing which colour a pixel is, and the
grader (:mod:`srpo.world.grader`) reads every attribute back from pixels.

Captions name the scene (``"a red circle on a blue background"``: the *base prompt*) and may be
prefixed by attribute words in the SRP control-word format (``"bright. vivid. a red circle on a
blue background"``), which is exactly how SRPO's reward text side adds control words.

Everything is drawn with torch from a seed: the same seed gives the same images, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Colour names and their hue in degrees (HSV), far enough apart to grade unambiguously.
COLOURS: dict[str, float] = {"red": 0.0, "yellow": 55.0, "green": 120.0, "blue": 225.0, "purple": 285.0}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
#: Binary attributes: name -> (word for False, word for True).
BINARY_ATTRIBUTES: dict[str, tuple[str, str]] = {"brightness": ("dark", "bright"),
                                                 "saturation": ("muted", "vivid")}
#: Every word a caption can hold (for tokenizer vocabularies).
WORLD_WORDS: tuple[str, ...] = (("a", "on", "background") + SHAPES + COLOUR_NAMES
                                + tuple(w for pair in BINARY_ATTRIBUTES.values() for w in pair))


class WorldSpec(BaseModel):
    """Ranges the world draws from. Attribute classes never overlap, so grading has a margin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(64, ge=16, description="image side in pixels")
    dark_value: tuple[float, float] = (0.35, 0.50)  # HSV value of "dark" images
    bright_value: tuple[float, float] = (0.80, 1.00)
    muted_saturation: tuple[float, float] = (0.30, 0.45)
    vivid_saturation: tuple[float, float] = (0.80, 1.00)
    hue_jitter: float = Field(8.0, ge=0, description="+- degrees around the colour's hue")
    shape_size: tuple[float, float] = (0.28, 0.42)  # half-extent as a fraction of the side
    margin: float = 0.06  # keep shapes this far (fraction of the side) from the border


@dataclass
class Scenes:
    """Attributes of ``N`` scenes (index tensors and continuous parameters)."""

    shape: torch.Tensor  # [N] long, index into SHAPES
    fg: torch.Tensor  # [N] long, index into COLOUR_NAMES
    bg: torch.Tensor  # [N] long, index into COLOUR_NAMES (never equal to fg)
    bright: torch.Tensor  # [N] bool
    vivid: torch.Tensor  # [N] bool
    value: torch.Tensor  # [N, 2] HSV value of (fg, bg)
    saturation: torch.Tensor  # [N, 2] HSV saturation of (fg, bg)
    hue: torch.Tensor  # [N, 2] degrees of (fg, bg)
    center: torch.Tensor  # [N, 2] (x, y) in [0, 1]
    extent: torch.Tensor  # [N] half-extent, fraction of the side

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def subset(self, idx: torch.Tensor | slice) -> "Scenes":
        return Scenes(**{k: v[idx] for k, v in self.__dict__.items()})

    def base_prompts(self) -> list[str]:
        return [base_prompt(int(s), int(f), int(b)) for s, f, b in zip(self.shape, self.fg, self.bg)]

    def words(self, attribute: str) -> list[str]:
        """The true word of a binary ``attribute`` for each scene ("bright", "muted", ...)."""
        flags = getattr(self, {"brightness": "bright", "saturation": "vivid"}[attribute])
        return [BINARY_ATTRIBUTES[attribute][int(f)] for f in flags]


def base_prompt(shape: int, fg: int, bg: int) -> str:
    """``"a red circle on a blue background"``: a scene's caption without attribute words."""
    return f"a {COLOUR_NAMES[fg]} {SHAPES[shape]} on a {COLOUR_NAMES[bg]} background"


def all_base_prompts() -> list[str]:
    """Every base prompt of the world (3 shapes x 5 x 4 colour pairs = 60), in a fixed order."""
    return [base_prompt(s, f, b) for s in range(len(SHAPES)) for f in range(len(COLOUR_NAMES))
            for b in range(len(COLOUR_NAMES)) if f != b]


def parse_prompt(prompt: str) -> dict[str, int | bool]:
    """The attributes a caption names: ``shape``, ``fg``, ``bg`` indices and any binary words.

    Control-word prefixes (``"bright. vivid. a red ..."``) are read too. Raises ``ValueError``
    for a caption that is not of this world.
    """
    *prefixes, body = [p.strip() for p in prompt.strip().split(". ")]
    words = body.split()
    if len(words) != 7 or words[0] != "a" or words[3] != "on" or words[6] != "background":
        raise ValueError(f"{prompt!r} is not a shapes-world caption ('a <colour> <shape> on a <colour> background')")
    try:
        out: dict[str, int | bool] = {"fg": COLOUR_NAMES.index(words[1]), "shape": SHAPES.index(words[2]),
                                      "bg": COLOUR_NAMES.index(words[5])}
    except ValueError as err:
        raise ValueError(f"{prompt!r} names an unknown colour or shape ({err})") from err
    for word in prefixes:
        for attribute, pair in BINARY_ATTRIBUTES.items():
            if word in pair:
                out[attribute] = pair.index(word) == 1
    return out


def sample_scenes(n: int, seed: int, spec: WorldSpec = WorldSpec(), *, bright: torch.Tensor | None = None,
                  vivid: torch.Tensor | None = None, base: Sequence[tuple[int, int, int]] | None = None) -> Scenes:
    """``n`` random scenes from ``seed``; ``bright`` / ``vivid`` / ``base`` (shape, fg, bg) may be fixed."""
    g = torch.Generator().manual_seed(int(seed))
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    ncol = len(COLOUR_NAMES)
    if base is None:
        shape = torch.randint(len(SHAPES), (n,), generator=g)
        fg = torch.randint(ncol, (n,), generator=g)
        bg = (fg + 1 + torch.randint(ncol - 1, (n,), generator=g)) % ncol  # any colour but fg
    else:
        shape, fg, bg = (torch.tensor([b[i] for b in base], dtype=torch.long) for i in range(3))
        if len(shape) != n:
            raise ValueError(f"base gives {len(shape)} scenes, expected {n}")
    bright = (u(n) < 0.5) if bright is None else bright.bool().clone()
    vivid = (u(n) < 0.5) if vivid is None else vivid.bool().clone()

    def pick(flag, lo_range, hi_range, jitter):
        lo = torch.where(flag, torch.tensor(hi_range[0]), torch.tensor(lo_range[0]))
        hi = torch.where(flag, torch.tensor(hi_range[1]), torch.tensor(lo_range[1]))
        level = lo + (hi - lo) * u(len(flag))  # [N]
        return torch.stack([level, (level + jitter * (u(len(flag)) - 0.5)).clamp(lo, hi)], 1)  # [N, 2]

    value = pick(bright, spec.dark_value, spec.bright_value, 0.08)
    saturation = pick(vivid, spec.muted_saturation, spec.vivid_saturation, 0.08)
    hues = torch.tensor(list(COLOURS.values()))
    hue = torch.stack([hues[fg], hues[bg]], 1) + spec.hue_jitter * (2 * u(n, 2) - 1)  # [N, 2]
    extent = spec.shape_size[0] + (spec.shape_size[1] - spec.shape_size[0]) * u(n)
    room = (0.5 - extent - spec.margin).clamp(min=0.0)
    center = 0.5 + (2 * u(n, 2) - 1) * room[:, None]  # [N, 2]
    return Scenes(shape, fg, bg, bright, vivid, value, saturation, hue % 360.0, center, extent)


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue in degrees, s and v in [0, 1] (same shape ``[...]``) -> RGB ``[..., 3]``."""
    k = lambda n: (n + h / 60.0) % 6  # noqa: E731
    f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    return torch.stack([f(5.0), f(3.0), f(1.0)], -1)


def shape_mask(scenes: Scenes, size: int) -> torch.Tensor:
    """Anti-aliased coverage of each scene's shape: ``[N, size, size]`` in [0, 1]."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    y, x = coords[:, None], coords[None, :]
    cx, cy = scenes.center[:, 0, None, None], scenes.center[:, 1, None, None]
    r = scenes.extent[:, None, None]
    dx, dy = x - cx, y - cy  # [N, S, S]
    circle = r - torch.sqrt(dx ** 2 + dy ** 2)
    square = 0.85 * r - torch.maximum(dx.abs(), dy.abs())  # same area scale as the circle, roughly
    # equilateral triangle pointing up, circumradius r: inside all three half-planes
    edges = []
    for angle in (90.0, 210.0, 330.0):  # outward normals of the three edges
        a = math.radians(angle)
        nx, ny = math.cos(a), -math.sin(a)  # image y grows downwards
        edges.append(0.5 * r * 1.15 - (dx * nx + dy * ny) * 1.15)
    triangle = torch.minimum(torch.minimum(edges[0], edges[1]), edges[2])
    sdf = torch.stack([circle, square, triangle], 1)  # [N, 3, S, S] in fractions of the side
    sdf = sdf.gather(1, scenes.shape[:, None, None, None].expand(-1, 1, size, size))[:, 0]
    return (sdf * size + 0.5).clamp(0.0, 1.0)


def render(scenes: Scenes, spec: WorldSpec = WorldSpec()) -> torch.Tensor:
    """Images ``[N, 3, S, S]`` in [0, 1]."""
    rgb = hsv_to_rgb(scenes.hue, scenes.saturation, scenes.value)  # [N, 2, 3]
    mask = shape_mask(scenes, spec.size)[:, None]  # [N, 1, S, S]
    fg, bg = rgb[:, 0, :, None, None], rgb[:, 1, :, None, None]  # [N, 3, 1, 1]
    return mask * fg + (1 - mask) * bg


def captions(scenes: Scenes, seed: int, attribute_prob: float = 0.5) -> list[str]:
    """Captions with each binary attribute word prefixed with probability ``attribute_prob``.

    Prefixes follow SRP's control-word format (``"<word>. <prompt>"``), in random order.
    """
    g = torch.Generator().manual_seed(int(seed))
    n, names = len(scenes), list(BINARY_ATTRIBUTES)
    keep = torch.rand(n, len(names), generator=g) < attribute_prob  # [N, A]
    flip = torch.rand(n, generator=g) < 0.5  # [N] reverse the prefix order
    words = {a: scenes.words(a) for a in names}
    out = []
    for i, prompt in enumerate(scenes.base_prompts()):
        prefix = [words[a][i] for j, a in enumerate(names) if keep[i, j]]
        out.append(". ".join((prefix[::-1] if flip[i] else prefix) + [prompt]))
    return out


def draw(n: int, seed: int, spec: WorldSpec = WorldSpec(), attribute_prob: float = 0.5,
         **fixed) -> tuple[torch.Tensor, list[str], Scenes]:
    """``n`` images ``[n, 3, S, S]``, their captions and scenes, all from ``seed``."""
    scenes = sample_scenes(n, seed, spec, **fixed)
    return render(scenes, spec), captions(scenes, seed + 1, attribute_prob), scenes
