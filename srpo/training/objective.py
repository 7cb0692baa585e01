"""The reward an update maximises, behind one ``score`` call whatever its kind.

- one feature reward (CLIP-style: image and text features): the fast path. The text sides (raw
  prompts, and with this step's positive / negative control words) are encoded once per batch;
  each branch's reward is :func:`srpo.srp.semantic_reward` of the image features with the run's
  form and the k of its schedule (``k_denoise`` / ``k_inversion``, read at :meth:`k_level`);
- a weighted sum of terms (:class:`~srpo.rewards.combine.MultiReward`; a joint or image-only
  reward becomes a one-term sum with the run's form and words), each term's value returned too;
- a score-only reward (no gradient): its ``score``, for the methods that only need numbers.

``train.content_weight`` adds ``w r(x, p)``, the reward on the plain prompt, to a single reward's form (the
penalty ``-w r(x, p)`` on the inversion branch, as for a ``plain`` multi-reward term); a ``rewards:`` block
says it with a ``plain`` entry instead.
"""

from __future__ import annotations

import torch

from srpo.noise import derived_seed, seeded_noise
from srpo.rewards.base import RewardModel
from srpo.rewards.combine import MultiReward, RewardTerm, inversion_penalty, reward_kind, single_term_reward
from srpo.rewards.config import RewardUse, check_content_weight
from srpo.rewards.scores import is_score_only
from srpo.schedules import linear_k
from srpo.srp import plain_reward, semantic_reward, with_control


def as_objective_reward(reward, cfg):
    """A joint or image-only reward as a one-term multi-reward with the run's form, words and k; a feature
    or score-only reward, or a multi-reward, as it is (``cfg.content_weight``: a one-term multi-reward gets its
    plain term; the feature fast path adds it itself)."""
    content = getattr(cfg, "content_weight", 0.0)
    multi = isinstance(reward, MultiReward)
    check_content_weight(content, multi=multi,
                         prompted=multi or not (is_score_only(reward) or reward_kind(reward) == "image_only"))
    if multi or is_score_only(reward):
        return reward
    if reward_kind(reward) == "feature":
        if cfg.reward_form == "image_relative":
            raise ValueError("train.reward_form 'image_relative' is for image-only rewards, but the reward reads "
                             "text: use reward_form 'weighted', 'srp', 'sgp', 'cfg' or 'plain'")
        return reward
    use = RewardUse(form=cfg.reward_form, **cfg.model_dump(include=set(RewardUse.model_fields) - {"weight", "form"}))
    single = single_term_reward(reward, use)
    if not content:
        return single
    return MultiReward([*single.terms, RewardTerm(name="content", reward=reward, form="plain", weight=content)])


def reward_texts(prompts: list[str]) -> list[str]:
    """What a feature or multi-reward's text side reads: an edit's target texts where the batch has them (not the
    instructions, which say what to change, not what the result shows), else the prompts."""
    targets = getattr(prompts, "target_prompts", None)
    return prompts if targets is None else targets


def source_kwargs(prompts: list[str], images: torch.Tensor) -> dict:
    """An edit batch's ``sources`` [B,3,H,W] and ``source_prompts`` for the reward (on ``images``' device), read
    from prompts that carry them (:class:`srpo.training.batches.SourcedPrompts`); none for text-to-image."""
    sources = getattr(prompts, "sources", None)
    if sources is None:
        return {}
    return {"sources": sources.to(images.device, images.dtype), "source_prompts": prompts.source_prompts}


class RewardObjective:
    """The run's reward on a branch (``"denoise"`` or ``"inversion"``) at a training level.

    ``grid_bounds`` (sigma_lo, sigma_hi) and ``d_sigma`` place the k schedules; ``autocast`` is the
    policy's (the reward tower runs in the policy's compute dtype on GPUs).
    """

    def __init__(self, reward: RewardModel | MultiReward, cfg, grid_bounds: tuple[float, float], d_sigma: float,
                 autocast):
        self.reward = as_objective_reward(reward, cfg)
        self.cfg, self.grid_bounds, self.d_sigma, self.autocast = cfg, grid_bounds, d_sigma, autocast
        self._text: tuple | None = None  # ((step, prompts), text sides) of the last batch

    @property
    def score_only(self) -> bool:
        """Whether the reward only scores (no gradient reaches the images)."""
        return is_score_only(self.reward)

    @property
    def terms(self) -> MultiReward | None:
        """The reward as a multi-reward's terms, or None for one feature (or score-only) reward."""
        return self.reward if isinstance(self.reward, MultiReward) else None

    @property
    def term_names(self) -> list[str]:
        return [term.name for term in self.terms.terms] if self.terms is not None else []

    @property
    def reward_models(self) -> list[torch.nn.Module]:
        """The distinct reward models the objective reads (one, or each a multi-reward's terms share)."""
        return self.terms.models if self.terms is not None else [self.reward]

    def k_level(self, branch: str, t: float) -> float:
        """Where a branch's k is read: ``t`` on the denoise branch (its model step ends there), ``t - d_sigma``
        on the inversion branch (its step starts there): the low-noise end of the step, as the authors index it."""
        return t if branch == "denoise" else t - self.d_sigma

    # ---- the feature fast path ----------------------------------------------------------
    def text_sides(self, prompts: list[str], step: int) -> dict[str, torch.Tensor]:
        """Reward text features [B,D] for the raw prompts and with this step's control words."""
        cfg, reward = self.cfg, self.reward
        feats = {"plain": reward.text_features(prompts)}
        if cfg.positive_words:
            feats["pos"] = reward.text_features(with_control(cfg.positive_words[step % len(cfg.positive_words)], prompts))
        if cfg.negative_words:
            feats["neg"] = reward.text_features(with_control(cfg.negative_words[step % len(cfg.negative_words)], prompts))
        return feats

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The reward's image features [B, D] of decoded ``images`` [B,3,H,W] (differentiable)."""
        with self.autocast():
            return self.reward.image_features(images).float()

    def branch_reward(self, branch: str, img: torch.Tensor, txt: dict[str, torch.Tensor], t: float) -> torch.Tensor:
        """Reward [B] on ``branch`` at level ``t`` of images with features ``img`` [B, D]."""
        cfg = self.cfg
        target, other = ("pos", "neg") if branch == "denoise" else ("neg", "pos")
        k = linear_k(self.k_level(branch, t), *self.grid_bounds,
                     *(cfg.k_denoise if branch == "denoise" else cfg.k_inversion))
        r = semantic_reward(cfg.reward_form, img, txt["plain"], txt.get(target), txt.get(other), k, cfg.cfg_k)
        if cfg.content_weight:  # the plain prompt's reward; no words to swap: the inversion branch's penalty
            r = r + cfg.content_weight * inversion_penalty(plain_reward(img, txt["plain"]), branch)
        return self.reward.scale * r

    def _text_of(self, prompts: list[str], step: int) -> dict[str, torch.Tensor]:
        key = (step, tuple(prompts))
        if self._text is None or self._text[0] != key:  # once per batch, not per level
            self._text = (key, self.text_sides(prompts, step))
        return self._text[1]

    # ---- a multi-reward -----------------------------------------------------------------
    def term_rewards(self, branch: str, images: torch.Tensor, prompts: list[str], step: int, t: float,
                     tag: str, rows: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A multi-reward on ``branch`` at level ``t``: (weighted sum [B], each term's value [B]).

        An image-relative term's pixel noise is seeded by (seed, step, ``tag``, branch, row), ``rows``
        naming each image's global sample (one per image).
        """
        def noise() -> torch.Tensor:  # [B, 3, H, W]
            seeds = [derived_seed(self.cfg.seed, step, "relative", tag, branch, row) for row in rows]
            return seeded_noise(images.shape[1:], seeds).to(images)

        with self.autocast():
            total, parts = self.terms(images, reward_texts(prompts), branch=branch, step=step,
                                      sigma=self.k_level(branch, t), sigma_lo=self.grid_bounds[0],
                                      sigma_hi=self.grid_bounds[1], noise=noise, **source_kwargs(prompts, images))
        return total.float(), {name: part.float() for name, part in parts.items()}

    # ---- the one path the methods call --------------------------------------------------
    def score(self, images: torch.Tensor, prompts: list[str], step: int, t: float, rows: list[int],
              branches: tuple[str, ...] = ("denoise",), tag: str = "level0"
              ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Rewards of ``images`` [G*B,3,H,W], the G ``branches`` stacked, at level ``t``.

        Returns each branch's reward [B] (differentiable unless the reward is score-only) and each
        branch's term values (a multi-reward's; else empty). ``rows``: each of the B images' global
        sample; ``tag``: what seeds an image-relative term's noise, besides step, branch and row.
        """
        if self.score_only:
            if branches != ("denoise",):
                raise ValueError("a score-only reward has no inversion branch")
            sources = source_kwargs(prompts, images)
            extra = {"sources": sources["sources"]} if sources else {}  # edits: the judge sees each source
            return [self.reward.score(images, prompts, **extra).float()], [{}]
        if self.terms is None:  # one image-tower pass for the group, text features once per batch
            txt = self._text_of(reward_texts(prompts), step)
            feats = self.image_features(images).chunk(len(branches))
            return [self.branch_reward(b, img, txt, t) for b, img in zip(branches, feats)], [{} for _ in branches]
        out = [self.term_rewards(b, img, prompts, step, t, tag, rows)
               for b, img in zip(branches, images.chunk(len(branches)))]
        return [r for r, _ in out], [parts for _, parts in out]
