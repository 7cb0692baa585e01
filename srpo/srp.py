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


#: The reward forms and the scores each one reads (``plain``: the raw prompt; ``target``/``other``:
#: the prompt with this branch's target / opposite control words).
FORM_INPUTS: dict[str, tuple[str, ...]] = {
    "plain": ("plain",), "sgp": ("target",), "srp": ("target", "other"),
    "cfg": ("target", "other"), "weighted": ("target", "other"),
}


def semantic_reward_from_scores(
    form: str,
    plain: torch.Tensor | None,
    target: torch.Tensor | None,
    other: torch.Tensor | None,
    k: float = 0.0,
    cfg_k: float = 1.5,
) -> torch.Tensor:
    """The reward forms over per-sample scores ``[B]`` instead of features.

    ``plain = r(x, p)``, ``target = r(x, target + p)``, ``other = r(x, other + p)``. A CLIP-like
    reward is linear in its text feature, so these equal the feature forms exactly; for a joint
    reward (HPSv3, which scores image and prompt together) they are the same combinations of its
    scores: ``srp = target - other``, ``cfg = (1 - cfg_k) other + cfg_k target``,
    ``weighted = (1 + k) target - other``.
    """
    if form not in FORM_INPUTS:
        raise ValueError(f"unknown reward form {form!r}: use plain, sgp, srp, cfg or weighted")
    given = {"plain": plain, "target": target, "other": other}
    missing = [name for name in FORM_INPUTS[form] if given[name] is None]
    if missing:
        raise ValueError(f"reward form {form!r} needs the {' and '.join(missing)} score(s): give control words")
    if form == "plain":
        return plain
    if form == "sgp":
        return target
    if form == "srp":
        return target - other
    if form == "cfg":
        return (1.0 - cfg_k) * other + cfg_k * target
    return (1.0 + k) * target - other


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
    The forms are those of :func:`semantic_reward_from_scores` (the score is linear in the text
    feature, so combining scores or features is the same).
    """
    if form not in FORM_INPUTS:
        raise ValueError(f"unknown reward form {form!r}: use plain, sgp, srp, cfg or weighted")
    feats = {"plain": txt_plain, "target": txt_target, "other": txt_other}
    scores = {name: _dot(img, feats[name]) if name in FORM_INPUTS[form] and feats[name] is not None else None
              for name in feats}  # each [B]
    return semantic_reward_from_scores(form, scores["plain"], scores["target"], scores["other"], k, cfg_k)
