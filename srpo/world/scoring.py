"""The shapes world's pixel grader as score-only rewards (``reward: {name: score, function: shapes-bright}``).

Per image, the score is the steered attribute read from the pixels plus colour fidelity:

    score = [attribute reads as the target] + (value - cut) * direction * 2   # how far past the cut
            + [foreground and background colours match the prompt]

so a policy-gradient method is pushed towards the target attribute and kept from losing the
colours the prompt names. The attribute term's continuous part gives images on the same side of the
cut different scores, which keeps a group's advantages informative when all members agree.
"""

from __future__ import annotations

import torch

from srpo.world.grader import Grades, grade
from srpo.world.shapes import WorldSpec, parse_prompt

#: attribute -> (the Grades field of its mean reading, its flag, the WorldSpec ranges of its low and high class)
_READINGS = {"brightness": ("value", "bright", "dark_value", "bright_value"),
             "saturation": ("saturation", "vivid", "muted_saturation", "vivid_saturation")}


def attribute_score(images: torch.Tensor, prompts: list[str], attribute: str, towards: bool,
                    spec: WorldSpec = WorldSpec()) -> torch.Tensor:
    """Scores [N] of ``images`` [N,3,H,W] for ``prompts``: target attribute share, margin and colour fidelity."""
    graded = grade(images, spec)
    hit = (getattr(graded, _READINGS[attribute][1]) == towards).float()  # [N]
    margin = attribute_margin(graded, attribute, towards, spec)  # [N]
    parsed = [parse_prompt(p) for p in prompts]
    colours = ((graded.fg == torch.tensor([p["fg"] for p in parsed]))
               & (graded.bg == torch.tensor([p["bg"] for p in parsed]))).float()  # [N]
    return hit + margin + colours


def attribute_margin(graded: Grades, attribute: str, towards: bool, spec: WorldSpec = WorldSpec()) -> torch.Tensor:
    """``2 * (reading - cut)`` [N] of a binary attribute, signed towards ``towards``: how far past the grader's cut."""
    field, _, low, high = _READINGS[attribute]
    cut = (getattr(spec, low)[1] + getattr(spec, high)[0]) / 2  # the grader's own cut
    return 2.0 * (1.0 if towards else -1.0) * (getattr(graded, field) - cut)


def bright_score(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Towards bright images, keeping the colours."""
    return attribute_score(images, prompts, "brightness", True)


def dark_score(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Towards dark images, keeping the colours."""
    return attribute_score(images, prompts, "brightness", False)


def vivid_score(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Towards vivid images, keeping the colours."""
    return attribute_score(images, prompts, "saturation", True)


def muted_score(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Towards muted images, keeping the colours."""
    return attribute_score(images, prompts, "saturation", False)
