"""The image-only relative reward (SRPO supplement S1): SRP for a reward with no text input.

An image-only scorer (Aesthetic v2.5, any ``score_images(images) -> [B]``) has no text side to
put control words on. The relative form compares the recovered clean image with a lightly
noised copy of itself::

    r_rel(x) = s(x) - s(x + noise_level * eps),    eps ~ N(0, I) seeded

both terms in the graph. A part of the score that zero-mean noise leaves unchanged — a global
bias such as a preference for saturated or bright images, locally affine in the pixels — appears
in both terms and cancels, in the value and in the gradient; what remains is how much the score
depends on the clean image's detail, the part noise destroys. The noise is added in pixel space
(``[0, 1]`` images, no rescaling of ``x``: scaling would keep a ``noise_level`` share of any
linear bias).

On both SRPO branches the same form is used, with the branch's sign
(:func:`srpo.rewards.combine.term_reward`: denoise maximises ``r_rel``, inversion its opposite,
there being no words to swap), and the per-level discount
multiplies ``r_rel`` like any other reward. The reward forms that read text (``sgp``, ``srp``,
``cfg``, ``weighted``) are refused with an error that names this form instead.
"""

from __future__ import annotations

from typing import Callable

import torch

from srpo.config import TEXT_FORMS

#: The one reward form an image-only reward accepts besides ``plain`` (its absolute score).
IMAGE_ONLY_FORMS = ("plain", "image_relative")


def check_image_only_form(form: str, reward_name: str = "this image-only reward") -> None:
    """Raise a ``ValueError`` for forms that need text (control words on the reward's text side)."""
    if form in TEXT_FORMS:
        raise ValueError(f"reward_form {form!r} puts control words on the reward's text side, but "
                         f"{reward_name} reads no text: use reward_form 'image_relative' (score of the image "
                         "minus the score of a lightly noised copy, supplement S1) or 'plain'")
    if form not in IMAGE_ONLY_FORMS:
        raise ValueError(f"unknown reward form {form!r} for an image-only reward: use 'image_relative' or 'plain'")


def noised_copy(images: torch.Tensor, noise_level: float, generator: torch.Generator | None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
    """``images + noise_level * eps`` (``[B, 3, H, W]``, in the graph); ``eps`` given, or drawn from ``generator``."""
    if noise_level <= 0:
        raise ValueError(f"noise_level {noise_level} must be > 0: the relative form compares the image with a "
                         "noised copy (0.02-0.1 of the [0, 1] range is light)")
    if eps is None:
        eps = torch.randn(images.shape, generator=generator, device=generator.device, dtype=torch.float32)
    elif eps.shape != images.shape:
        raise ValueError(f"the relative form's noise has shape {tuple(eps.shape)}, the images {tuple(images.shape)}")
    return images + noise_level * eps.to(device=images.device, dtype=images.dtype)


def relative_from_scores(clean: torch.Tensor, noised: torch.Tensor) -> torch.Tensor:
    """``s(x) - s(x + noise)`` per sample: ``[B]``, ``[B]`` -> ``[B]``."""
    return clean - noised


def image_only_relative_reward(score_images: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                               noise_level: float, generator: torch.Generator | None,
                               eps: torch.Tensor | None = None) -> torch.Tensor:
    """Supplement S1's relative reward of ``images`` ``[B, 3, H, W]`` under ``score_images``: ``[B]``.

    The clean images and their noised copies are scored in one batch of ``2B``; ``eps``
    ``[B, 3, H, W]`` is the standard-normal noise (default: drawn from ``generator``).
    """
    b = images.shape[0]
    both = torch.cat([images, noised_copy(images, noise_level, generator, eps)])  # [2B, 3, H, W]
    scores = score_images(both)  # [2B]
    return relative_from_scores(scores[:b], scores[b:])


def image_only_reward(form: str, score_images: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                      noise_level: float, generator: torch.Generator | None,
                      eps: torch.Tensor | None = None) -> torch.Tensor:
    """``plain``: ``s(x)``; ``image_relative``: :func:`image_only_relative_reward`. Text forms are refused."""
    check_image_only_form(form)
    if form == "plain":
        return score_images(images)
    return image_only_relative_reward(score_images, images, noise_level, generator, eps)
