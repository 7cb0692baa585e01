"""Reward adapters: feature rewards (image features, text features, score), joint rewards
(``score(images, prompts)`` only: HPSv3), image-only rewards (``score_images``: Aesthetic v2.5) and
score-only rewards (no gradient).

``load_reward(RewardConfig(...))`` returns a frozen :class:`RewardModel` (or, for ``name: score``,
a score-only :class:`~srpo.rewards.scores.ScoreReward`); see :mod:`srpo.rewards.base` for the
protocol and :mod:`srpo.rewards.registry` for the table of names. open_clip and transformers are
imported only when a reward that needs them is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from srpo.published import provide_builder
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, RewardModel, preprocess_for_clip
from srpo.rewards.config import FEATURE_REWARDS, KNOWN_REWARDS, RewardConfig
from srpo.rewards.registry import import_here, reward_spec

__all__ = ["CLIP_MEAN", "CLIP_STD", "FEATURE_REWARDS", "KNOWN_REWARDS", "RewardConfig", "RewardModel", "load_reward",
           "preprocess_for_clip"]


def load_reward(config: RewardConfig, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load the frozen reward model that ``config`` describes onto ``device`` in ``dtype``.

    CLIP-like rewards are :class:`RewardModel` s (image and text features); ``hpsv3`` is a joint
    reward (``score(images, prompts)`` only, ``is_joint = True``); ``aesthetic_v2.5`` is
    image-only (``score_images(images)``, ``is_image_only = True``); ``score`` is score-only
    (float32 scores on ``device``).
    """
    spec = reward_spec(config.name)  # RewardConfig validates names; this guards a config built without validation
    if spec.kind == "score_only":
        return spec.loader()(config, device)
    return spec.loader()(config).to(device=device, dtype=dtype)


def tiny_reward_folder(*, family: str | None, seed: int = 0) -> Path:
    """The folder of ``builtin:tiny`` for reward ``family`` (a reward name): a seeded tiny random model
    of that family, built on first use (see :mod:`srpo.published`)."""
    spec = reward_spec(family or "")
    if spec.tiny is None:
        raise ValueError(f"reward {family!r} has no builtin:tiny model (it loads no weights)")
    return import_here(spec.tiny)(name=spec.name, seed=seed)


provide_builder("reward", "tiny", tiny_reward_folder)
