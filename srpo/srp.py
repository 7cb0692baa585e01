"""Semantic Relative Preference: rewards built from one image and several texts.

A CLIP-like reward is ``r(x, p) = <f_img(x), f_txt(p)>`` with normalised features. Control words
are prepended to the prompt on the reward's text side only (``"<word>. <prompt>"``); the policy
always sees the raw prompt. All functions take image features ``img [B,D]`` and text features
``[B,D]`` and return a reward per sample ``[B]``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def with_control(word: str, prompts: Sequence[str]) -> list[str]:
    """Prepend a control word to each prompt: ``"<word>. <prompt>"`` (empty word: unchanged)."""
    word = word.strip()
    return [f"{word}. {p}" if word else p for p in prompts]


def _dot(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    return (img * txt).sum(dim=-1)  # [B]


def plain_reward(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """``<f_img, f_txt(p)>``: the reward model as it is."""
    return _dot(img, txt)


def sgp_reward(img: torch.Tensor, txt_pos: torch.Tensor) -> torch.Tensor:
    """Semantic-guided preference: ``<f_img, f_txt(pos + p)>``."""
    return _dot(img, txt_pos)


def srp_reward(img: torch.Tensor, txt_pos: torch.Tensor, txt_neg: torch.Tensor) -> torch.Tensor:
    """Semantic relative preference (eq. 9): ``<f_img, f_txt(pos + p) - f_txt(neg + p)>``."""
    return _dot(img, txt_pos - txt_neg)


def cfg_reward(img: torch.Tensor, txt_pos: torch.Tensor, txt_neg: torch.Tensor, k: float) -> torch.Tensor:
    """CFG-like (eq. 10): ``<f_img, (1 - k) f_txt(neg + p) + k f_txt(pos + p)>``."""
    return _dot(img, (1.0 - k) * txt_neg + k * txt_pos)


def weighted_relative_reward(
    img: torch.Tensor, txt_target: torch.Tensor, txt_other: torch.Tensor, k: float
) -> torch.Tensor:
    """The authors' FLUX form: ``<f_img, (1 + k) f_txt(target + p) - f_txt(other + p)>``.

    Denoise branch: target = positive words, other = negative words. Inversion branch: target =
    negative words, other = positive words (its gradient through v has the opposite sign).
    """
    return _dot(img, (1.0 + k) * txt_target - txt_other)


def semantic_reward(
    form: str,
    img: torch.Tensor,
    txt_plain: torch.Tensor,
    txt_target: torch.Tensor | None,
    txt_other: torch.Tensor | None,
    k: float = 0.0,
    cfg_k: float = 1.5,
) -> torch.Tensor:
    """Dispatch on the reward form (``plain``, ``sgp``, ``srp``, ``cfg``, ``weighted``).

    ``txt_target`` are the features of the words this branch moves towards (positive words on
    the denoise branch, negative words on the inversion branch), ``txt_other`` the opposite.
    """
    if form == "plain":
        return plain_reward(img, txt_plain)
    if form == "sgp":
        return sgp_reward(img, txt_target)
    if form == "srp":
        return srp_reward(img, txt_target, txt_other)
    if form == "cfg":
        return cfg_reward(img, txt_target, txt_other, cfg_k)
    if form == "weighted":
        return weighted_relative_reward(img, txt_target, txt_other, k)
    raise ValueError(f"unknown reward form {form!r}: use plain, sgp, srp, cfg or weighted")
