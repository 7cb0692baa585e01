"""The control-word finder as a report: image sets from folders or the shapes world, CSV + HTML.

:func:`run_word_finder` loads the reward and the two image sets a :class:`WordFinderConfig`
names, ranks the candidates with :func:`srpo.rewards.word_finder.find_control_words` and writes
``control_words.csv``, ``report.json`` and ``index.html`` (the dashboard table, each word's
separation with its bootstrap interval drawn as a bar) into a folder.

An image set is a folder (local or fsspec URL) of PNG/JPEG files, or a shapes-world set
``world:<word>`` (``world:bright``, ``world:dark``, ``world:vivid``, ``world:muted``): images
the world draws with that attribute, everything else random.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from srpo.evaluation.artifacts import INDEX_HTML, ReportFolder
from srpo.evaluation.html import esc, page, table
from srpo.io import atomic_write_text, csv_text, resolve_local
from srpo.rewards.config import RewardConfig
from srpo.rewards.word_finder import COLUMNS, WordScore, find_control_words

#: The SRPO authors' control words (positive, then negative: their HPS lists) and a few common
#: style words: the default candidates.
PAPER_WORDS = ("Natural-lighting", "Detail", "Detailed", "Real", "Realistic", "Photo", "Cinematic", "Sharp",
               "Concept art", "Painting", "Anime", "Flat", "Oil", "Cartoon", "Blurry", "Illustration")
WORLD_PREFIX = "world:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CSV_FILE, JSON_FILE = "control_words.csv", "report.json"


class WordFinderConfig(BaseModel):
    """What the finder compares: a reward, two image sets, prompts and candidate words."""

    model_config = ConfigDict(extra="forbid")

    reward: RewardConfig
    images_a: str = Field(description="the look you want: a folder / fsspec URL of images, or world:<word>")
    images_b: str = Field(description="the look you do not want: same forms as images_a")
    prompts: list[str] = Field(default_factory=lambda: ["a photo"], min_length=1)
    candidates: list[str] = Field(default_factory=lambda: list(PAPER_WORDS), min_length=1)
    max_images: int = Field(64, ge=2, description="images read (or drawn) per set")
    image_size: Optional[int] = Field(None, ge=8, description="resize every image to this square side (default: "
                                      "the first image's size when sizes differ)")
    num_samples: int = Field(500, ge=10, description="bootstrap resamples")
    confidence: float = Field(0.9, gt=0, lt=1)
    seed: int = 0


def world_images(word: str, n: int, seed: int) -> torch.Tensor:
    """``n`` shapes-world images with the attribute ``word`` (bright/dark/vivid/muted): ``[n, 3, S, S]``."""
    from srpo.world.shapes import BINARY_ATTRIBUTES, draw

    for attribute, (off, on) in BINARY_ATTRIBUTES.items():
        if word in (off, on):
            flag = torch.full((n,), word == on)
            key = "bright" if attribute == "brightness" else "vivid"
            images, _, _ = draw(n, seed, **{key: flag})
            return images
    words = [w for pair in BINARY_ATTRIBUTES.values() for w in pair]
    raise ValueError(f"unknown world image set {WORLD_PREFIX + word!r}: use one of "
                     f"{', '.join(WORLD_PREFIX + w for w in words)}, or a folder of images")


def folder_images(location: str, limit: int, size: int | None) -> torch.Tensor:
    """Up to ``limit`` images of the folder at ``location`` (sorted by name): ``[N, 3, S, S]``."""
    from srpo.evaluation.images import load_image

    folder = resolve_local(location)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit] if folder.is_dir() else []
    if len(paths) < 2:
        raise ValueError(f"image set {location!r} holds {len(paths)} images ({'/'.join(IMAGE_SUFFIXES)}): "
                         "give a folder with at least 2, or a world:<word> set")
    images = [load_image(p) for p in paths]
    side = size or images[0].shape[-1]
    return torch.stack([F.interpolate(im[None], size=(side, side), mode="bicubic", antialias=True,
                                      align_corners=False)[0].clamp(0, 1) if im.shape[-2:] != (side, side) else im
                        for im in images])


def image_set(location: str, limit: int, size: int | None, seed: int) -> torch.Tensor:
    if location.startswith(WORLD_PREFIX):
        return world_images(location[len(WORLD_PREFIX):], limit, seed)
    return folder_images(location, limit, size)


def write_word_report(scores: Sequence[WordScore], out_dir: Path, *, title: str, context: dict) -> ReportFolder:
    """``control_words.csv``, ``report.json`` and ``index.html`` for ranked ``scores`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [s.row() for s in scores]
    atomic_write_text(out_dir / CSV_FILE, csv_text(rows, COLUMNS))
    atomic_write_text(out_dir / JSON_FILE, json.dumps({**context, "words": rows}, indent=1, ensure_ascii=False))
    atomic_write_text(out_dir / INDEX_HTML, page(title, _summary(context) + _table(rows)))
    return ReportFolder(out_dir, kind="control-words")


def _summary(context: dict) -> str:
    return ("<p>Separation of set A (" + esc(context.get("images_a", "")) + ") from set B ("
            + esc(context.get("images_b", "")) + ") by each word's text direction f_txt(word. p) - f_txt(p) under "
            + esc(context.get("reward", "")) + ": Cohen's d, with a " + esc(context.get("confidence", ""))
            + " bootstrap interval. Large and positive: a positive control word for the look of A (negative for B)."
            + "</p>")


def forest_svg(rows: list[dict], width: int = 480, row_height: int = 18) -> str:
    """Each word's separation (dot) and bootstrap interval (bar) on one axis through 0: an SVG."""
    span = max([abs(r[k]) for r in rows for k in ("low", "high", "separation")] + [1e-9])
    label, plot = 150, width - 160
    x = lambda v: label + plot / 2 + (plot / 2 - 5) * v / span  # noqa: E731
    height = row_height * len(rows) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height}" stroke="#999"/>']
    for i, r in enumerate(rows):
        y = 5 + row_height * i + row_height / 2
        parts.append(f'<text x="{label - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12">{esc(r["word"])}</text>'
                     f'<line x1="{x(r["low"]):.1f}" y1="{y:.1f}" x2="{x(r["high"]):.1f}" y2="{y:.1f}" '
                     f'stroke="#7aa6d8" stroke-width="4"/><circle cx="{x(r["separation"]):.1f}" cy="{y:.1f}" r="3.5" '
                     'fill="#1f4e8c"/>')
    return "".join(parts) + "</svg>"


def _table(rows: list[dict]) -> str:
    return forest_svg(rows) + table(COLUMNS, [[r[c] for c in COLUMNS] for r in rows], 3)


def run_word_finder(cfg: WordFinderConfig, out_dir: Path, reward=None) -> tuple[ReportFolder, list[WordScore]]:
    """Load the reward (unless given) and both image sets, rank the candidates, write the report."""
    if reward is None:
        from srpo.rewards import load_reward

        reward = load_reward(cfg.reward)
    images_a = image_set(cfg.images_a, cfg.max_images, cfg.image_size, cfg.seed)
    images_b = image_set(cfg.images_b, cfg.max_images, cfg.image_size or images_a.shape[-1], cfg.seed + 1)
    scores = find_control_words(reward, images_a, images_b, cfg.prompts, cfg.candidates,
                                num_samples=cfg.num_samples, confidence=cfg.confidence, seed=cfg.seed)
    context = {"reward": f"{cfg.reward.name} ({cfg.reward.checkpoint})", "images_a": cfg.images_a,
               "images_b": cfg.images_b, "num_a": len(images_a), "num_b": len(images_b), "prompts": cfg.prompts,
               "confidence": cfg.confidence, "num_samples": cfg.num_samples}
    report = write_word_report(scores, out_dir, title=f"Control words: {cfg.images_a} vs {cfg.images_b}",
                               context=context)
    return report, scores
