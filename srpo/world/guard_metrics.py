"""Shapes-world guard metrics: the grader's attribute shares and colour fidelity, per image.

``world.<key>`` in ``train.guard.metrics``; each image scores 1 or 0 (a share's mean over the
guard's images is the share), ``NaN`` where the key does not apply (an attribute's fidelity on a
prompt that does not name it), and the mean HSV value / saturation as numbers:

- fidelity: ``world.fg``, ``world.bg``, ``world.colours`` (both right), ``world.shape``,
  ``world.brightness``, ``world.saturation`` (only over prompts naming that attribute);
- shares: ``world.bright_share``, ``world.vivid_share``; ``world.mean_value``, ``world.mean_saturation``.

The world knows what each control word moves (:data:`STEERED`): a guard built here turns off the
rules on those metrics when the run's words name the attribute (``bright``/``dark`` move
brightness, ``vivid``/``muted`` saturation), so one guard block serves every direction.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from srpo.config import GUARD_WORLD_PREFIX, GuardConfig
from srpo.world.grader import Grades, grade
from srpo.world.shapes import BINARY_ATTRIBUTES, parse_prompt

WORLD_KEY = "world"
WORLD_KEYS = ("fg", "bg", "colours", "shape", *BINARY_ATTRIBUTES, "bright_share", "vivid_share",
              "mean_value", "mean_saturation")


#: The guard metrics each world attribute moves: the world's own readings and the image statistics that follow it.
STEERED: dict[str, tuple[str, ...]] = {
    "brightness": ("world.bright_share", "world.mean_value", "world.brightness", "brightness"),
    "saturation": ("world.vivid_share", "world.mean_saturation", "world.saturation", "saturation", "colourfulness"),
}


def steered_metrics(words: Sequence[str]) -> set[str]:
    """The guard metrics the control ``words`` move (words of no world attribute move none)."""
    words = {w.strip().lower() for w in words}
    return {m for attribute, pair in BINARY_ATTRIBUTES.items() if words & set(pair) for m in STEERED[attribute]}


def per_image_world_scores(grades: Grades, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{key: [N]}`` for every key of :data:`WORLD_KEYS` (the per-image form of ``fidelity`` and ``shares``)."""
    parsed = [parse_prompt(p) for p in prompts]
    ok_fg = grades.fg == torch.tensor([p["fg"] for p in parsed])
    ok_bg = grades.bg == torch.tensor([p["bg"] for p in parsed])
    out = {"fg": ok_fg, "bg": ok_bg, "colours": ok_fg & ok_bg,
           "shape": grades.shape == torch.tensor([p["shape"] for p in parsed]),
           "bright_share": grades.bright, "vivid_share": grades.vivid}
    out = {k: v.float() for k, v in out.items()}
    for attribute in BINARY_ATTRIBUTES:
        want = torch.tensor([float(p[attribute]) if attribute in p else math.nan for p in parsed])
        out[attribute] = torch.where(want.isnan(), want, (grades.flag(attribute).float() == want).float())
    out["mean_value"], out["mean_saturation"] = grades.value.float(), grades.saturation.float()
    return out


def world_metric_names(guard: GuardConfig) -> list[str]:
    """The ``world.<key>`` names of ``guard.metrics``; raises for an unknown key."""
    names = [n for n in guard.metrics if n.startswith(GUARD_WORLD_PREFIX)]
    for name in names:
        if name[len(GUARD_WORLD_PREFIX):] not in WORLD_KEYS:
            raise ValueError(f"train.guard.metrics names {name!r}, not a shapes-world guard metric: choose from "
                             f"{', '.join(GUARD_WORLD_PREFIX + k for k in WORLD_KEYS)}")
    return names


def world_guard_metrics(guard: GuardConfig) -> tuple[dict, list[str]]:
    """``({"world": MetricFn}, names)`` for ``build_guard_metrics(extra=..., extra_names=...)``.

    Both are empty when ``guard.metrics`` names no world metric.
    """
    names = world_metric_names(guard)
    if not names:
        return {}, []

    def score(images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        scores = per_image_world_scores(grade(images), prompts)
        return {name: scores[name[len(GUARD_WORLD_PREFIX):]] for name in names}

    score.steered_metrics = steered_metrics  # what the guard's rules must not penalise (Guard.follow)
    return {WORLD_KEY: score}, names


def build_world_guard_metrics(guard: GuardConfig, *, reward=None, device: str = "cpu", **suite) -> dict:
    """Every guard metric of a world run: the world's and the suite's (``suite``: build_guard_metrics' options)."""
    from srpo.evaluation.guard_metrics import build_guard_metrics

    extra, names = world_guard_metrics(guard)
    return build_guard_metrics(guard, reward=reward, extra=extra, extra_names=names, device=device, **suite)


def build_job_guard_metrics(job, reward, device: str) -> dict:
    """A training job's guard metric functions (:data:`srpo.training.job.GuardMetrics`): the world's and the
    suite's, with the job's metric configs and extra rewards."""
    return build_world_guard_metrics(job.train.guard, reward=reward, device=device,
                                     metric_configs=job.metric_configs, extra_rewards=job.extra_rewards)
