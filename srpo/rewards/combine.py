"""One reward term of any kind, and a weighted sum of several (the multi-reward).

Three kinds of reward follow three protocols:

- **feature** rewards (:class:`~srpo.rewards.base.RewardModel`: HPS v2.1, PickScore, CLIP) give
  ``image_features`` and ``text_features``; a form is combined on the features (one image
  forward, cached text features per prompt variant);
- **joint** rewards (``is_joint``: HPSv3) give ``score(images, prompts)`` only; a form is the same
  combination of scores under the prompt variants (one forward per variant);
- **image-only** rewards (``is_image_only``: Aesthetic v2.5) give ``score_images(images)``; their
  forms are ``plain`` and ``image_relative`` (:mod:`srpo.rewards.image_only`). Having no words to
  swap, such a term is the penalty ``-r`` on the inversion branch (the branch steps against the
  model's velocity, so minimising ``r`` there pushes the model the same way as maximising it on
  the denoise branch). A feature or joint term of form ``plain`` has no words to swap either and is
  the same penalty there (:func:`plain_on_branch`).

An edit's terms (:mod:`srpo.rewards.edit_reward`) read the source images too: ``against: source``
compares the edited image's features with its source's (``sources=`` to :class:`MultiReward`), ``against:
direction`` their change with the change from the source caption to the text (``source_prompts=`` too), ``against:
structure`` the two images' edge maps (pixels, no model read).

Every term is on its reward's scale (``reward.scale`` times the form's value), as the single-reward
trainer's is.

:func:`term_reward` computes one term's ``[B]`` reward on a branch; :class:`MultiReward` sums
``weight * reward`` over terms and returns each term's value too (for logging). The control word
of a step is ``words[step % len(words)]`` and the additive weight ``k`` follows the term's
``k_denoise`` / ``k_inversion`` line over the training grid, as in the single-reward trainer.
:func:`load_multi_reward` loads each distinct :class:`~srpo.rewards.config.RewardConfig` once:
two terms on the same model (HPS with two word pairs) share it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from pydantic import ConfigDict

from srpo.rewards.config import MultiRewardConfig, RewardConfig, RewardUse, WeightedRewardConfig
from srpo.rewards.edit_reward import (check_source_prompts, check_sources, source_direction, source_similarity,
                                     source_structure)
from srpo.rewards.image_only import image_only_reward
from srpo.schedules import linear_k
from srpo.srp import FORM_INPUTS, semantic_reward, semantic_reward_from_scores, with_control

BRANCHES = ("denoise", "inversion")


def reward_kind(reward) -> str:
    """``"image_only"``, ``"joint"`` or ``"feature"`` (see the module docstring)."""
    if getattr(reward, "is_image_only", False):
        return "image_only"
    if getattr(reward, "is_joint", False):
        return "joint"
    return "feature"


class RewardTerm(RewardUse):
    """One weighted reward: the loaded model and how it is used (the fields of :class:`RewardUse`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    reward: torch.nn.Module

    def words(self, branch: str, step: int) -> tuple[str | None, str | None]:
        """This step's (target, other) control words on ``branch`` (``None`` where a list is empty)."""
        pos = self.positive_words[step % len(self.positive_words)] if self.positive_words else None
        neg = self.negative_words[step % len(self.negative_words)] if self.negative_words else None
        return (pos, neg) if branch == "denoise" else (neg, pos)

    def k(self, branch: str, sigma: float, sigma_lo: float, sigma_hi: float) -> float:
        """The additive weight of the ``weighted`` form at noise level ``sigma`` on ``branch``."""
        start, end = self.k_denoise if branch == "denoise" else self.k_inversion
        return linear_k(sigma, sigma_lo, sigma_hi, start, end)


def _variants(term: RewardTerm, branch: str, step: int, prompts: Sequence[str]) -> dict[str, list[str] | None]:
    """The prompt variants the term's form reads: ``plain``, ``target`` and ``other`` (or ``None``)."""
    target, other = term.words(branch, step)
    words = {"plain": "", "target": target, "other": other}
    return {name: (with_control(words[name], prompts) if name in FORM_INPUTS[term.form] and words[name] is not None
                   else None) for name in words}


def term_reward(term: RewardTerm, images: torch.Tensor, prompts: Sequence[str], *, branch: str = "denoise",
                step: int = 0, sigma: float = 0.5, sigma_lo: float = 0.0, sigma_hi: float = 1.0,
                generator: torch.Generator | None = None,
                noise: Callable[[], torch.Tensor] | None = None, sources: torch.Tensor | None = None,
                source_prompts: Sequence[str] | None = None) -> torch.Tensor:
    """One term's reward ``[B]`` for ``images`` ``[B, 3, H, W]`` (in ``[0, 1]``, in the graph) and ``prompts``.

    ``noise`` (``() -> [B, 3, H, W]``, standard normal) gives ``image_relative``'s pixel noise; else
    it is drawn from ``generator`` (default: seeded by ``step``). ``sources`` ``[B, 3, H', W']``: the
    source images of edits, which ``against: source`` / ``direction`` terms compare with (others ignore
    them); ``source_prompts``: the sources' captions, which ``against: direction`` reads.
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch {branch!r}: use 'denoise' or 'inversion'")
    if term.against != "text":  # an edit's source terms: no words to swap, the inversion branch's penalty
        sources = check_sources(images, sources, term.name)
        if term.against == "source":
            r = source_similarity(term.reward, images, sources)
        elif term.against == "direction":
            r = source_direction(term.reward, images, sources, prompts,
                                 check_source_prompts(images, source_prompts, term.name))
        else:  # structure: pixels, the term's reward is not read
            r = source_structure(images, sources)
        return inversion_penalty(r, branch)
    kind = reward_kind(term.reward)
    if kind == "image_only":
        gen = generator if generator is not None else torch.Generator().manual_seed(step)
        eps = noise() if noise is not None and term.form == "image_relative" else None
        r = image_only_reward(term.form, term.reward.score_images, images, term.noise_level, gen, eps)
        return inversion_penalty(r, branch)
    k = term.k(branch, sigma, sigma_lo, sigma_hi)
    variants = _variants(term, branch, step, prompts)
    if kind == "joint":
        scores = {name: None if p is None else term.reward.score(images, p) for name, p in variants.items()}  # [B]
        r = semantic_reward_from_scores(term.form, scores["plain"], scores["target"], scores["other"], k, term.cfg_k)
        return plain_on_branch(term, r, branch)
    img = term.reward.image_features(images)  # [B, D]
    txt = {name: None if p is None else term.reward.text_features(p) for name, p in variants.items()}  # [B, D]
    r = term.reward.scale * semantic_reward(term.form, img, txt["plain"], txt["target"], txt["other"], k, term.cfg_k)
    return plain_on_branch(term, r, branch)


def inversion_penalty(r: torch.Tensor, branch: str) -> torch.Tensor:
    """A reward with no control words to swap, on ``branch``: ``r`` on the denoise branch, the penalty ``-r`` on the
    inversion branch (its step runs against the model's velocity, so minimising ``r`` there pushes the model the same
    way as maximising it on the denoise branch; maximising ``+r`` there would undo the denoise branch's gradient)."""
    return r if branch == "denoise" else -r


def plain_on_branch(term: RewardTerm, r: torch.Tensor, branch: str) -> torch.Tensor:
    """A ``plain`` text term has no words to swap either: :func:`inversion_penalty`, as an image-only or source term
    (the single-reward config refuses ``reward_form: plain`` with inversion for that reason)."""
    return inversion_penalty(r, branch) if term.form == "plain" else r


class MultiReward:
    """A weighted sum of reward terms: ``r = sum_i weight_i * r_i``, each ``r_i`` on the same branch."""

    def __init__(self, terms: Sequence[RewardTerm]) -> None:
        if not terms:
            raise ValueError("a multi-reward needs at least one reward term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"reward term names must be unique, got {names}: set `name` on each entry")
        self.terms = list(terms)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], **branch_kwargs
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total [B], {term name: its unweighted reward [B]})``; ``branch_kwargs`` as :func:`term_reward`."""
        parts = {t.name: term_reward(t, images, prompts, **branch_kwargs) for t in self.terms}
        total = sum(t.weight * parts[t.name] for t in self.terms)
        return total, parts

    @property
    def models(self) -> list[torch.nn.Module]:
        """The distinct reward models (a model shared by two terms appears once)."""
        return list({id(t.reward): t.reward for t in self.terms}.values())


def load_once(config: RewardConfig, loaded: dict[str, torch.nn.Module], loader: Callable[..., torch.nn.Module],
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """``loader(config, device=, dtype=)``, or the model ``loaded`` already holds for the same config (by its JSON)."""
    key = config.model_dump_json()
    if key not in loaded:
        loaded[key] = loader(config, device=device, dtype=dtype)
    return loaded[key]


def load_multi_reward(config: MultiRewardConfig, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, loader: Callable[..., torch.nn.Module] | None = None,
                      loaded: dict[str, torch.nn.Module] | None = None) -> MultiReward:
    """Load every entry's reward (each distinct :class:`RewardConfig` once) and build the terms.

    ``loaded``: models by config (:func:`load_once`) to share with the caller, e.g. the run's ``reward:``.
    """
    if loader is None:
        from srpo.rewards import load_reward as loader
    loaded = {} if loaded is None else loaded
    return MultiReward([term_from_config(entry, load_once(entry.reward, loaded, loader, device, dtype), i)
                        for i, entry in enumerate(config.rewards)])


def single_term_reward(reward: torch.nn.Module, use: RewardUse, name: str = "reward") -> MultiReward:
    """One reward of any kind as a one-term :class:`MultiReward` used as ``use`` says (weight 1)."""
    return MultiReward([RewardTerm(name=name, reward=reward, **use.model_dump(exclude={"weight"}))])


def term_from_config(entry: WeightedRewardConfig, reward: torch.nn.Module, index: int = 0) -> RewardTerm:
    """A :class:`RewardTerm` from its config and loaded model (default name ``<reward name>-<index>``)."""
    use = entry.model_dump(include=set(RewardUse.model_fields))
    return RewardTerm(name=entry.name or f"{entry.reward.name}-{index}", reward=reward, **use)
