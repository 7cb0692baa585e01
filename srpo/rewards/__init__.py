"""Reward adapters: feature rewards (image features, text features, score), joint rewards
(``score(images, prompts)`` only: HPSv3) and image-only rewards (``score_images``: Aesthetic v2.5).

``load_reward(RewardConfig(...))`` returns a frozen :class:`RewardModel` (or, for ``name: score``,
a score-only :class:`~srpo.rewards.scores.ScoreReward`); see
:mod:`srpo.rewards.base` for the protocol. open_clip and transformers are imported only when a
reward that needs them is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from srpo.rewards.base import CLIP_MEAN, CLIP_STD, RewardModel, preprocess_for_clip
from srpo.rewards.config import (FEATURE_REWARDS, HF_CLIP_REWARDS, JOINT_REWARDS, KNOWN_REWARDS, OPEN_CLIP_REWARDS,
                                 RewardConfig)

__all__ = ["CLIP_MEAN", "CLIP_STD", "FEATURE_REWARDS", "KNOWN_REWARDS", "RewardConfig", "RewardModel", "load_reward",
           "preprocess_for_clip"]


def load_reward(config: RewardConfig, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load the frozen reward model that ``config`` describes onto ``device`` in ``dtype``.

    CLIP-like rewards are :class:`RewardModel` s (image and text features); ``hpsv3`` is a joint
    reward (``score(images, prompts)`` only, ``is_joint = True``); ``aesthetic_v2.5`` is
    image-only (``score_images(images)``, ``is_image_only = True``).
    """
    if config.name in OPEN_CLIP_REWARDS:
        from srpo.rewards.open_clip_reward import load_open_clip_reward

        reward: RewardModel = load_open_clip_reward(config)
    elif config.name in HF_CLIP_REWARDS:
        from srpo.rewards.hf_clip_reward import load_hf_clip_reward

        reward = load_hf_clip_reward(config)
    elif config.score_only:
        from srpo.rewards.scores import ScoreReward, metric_score, resolve_score

        fn, label = ((metric_score(config.metric, device), f"metric:{config.metric['name']}") if config.metric
                     else (resolve_score(config.function), config.function))
        return ScoreReward(fn, label, 1.0 if config.scale is None else config.scale).to(device=device)  # type: ignore[return-value]
    elif config.name in JOINT_REWARDS:
        from srpo.rewards.hpsv3_reward import load_hpsv3_reward

        reward = load_hpsv3_reward(config)
    elif config.name == "aesthetic_v2.5":
        from srpo.rewards.aesthetic_reward import load_aesthetic_reward

        reward = load_aesthetic_reward(config)
    else:  # RewardConfig validates names; this guards against a constructed-without-validation config
        raise ValueError(f"unknown reward {config.name!r}: choose one of {', '.join(KNOWN_REWARDS)}")
    return reward.to(device=device, dtype=dtype)


def tiny_reward_folder(*, family: str | None, seed: int = 0) -> Path:
    """The folder of ``builtin:tiny`` for reward ``family`` (a reward name): a seeded tiny random model
    of that family, built on first use (see :mod:`srpo.published`)."""
    if family in OPEN_CLIP_REWARDS:
        from srpo.rewards.open_clip_reward import build_tiny_open_clip

        return build_tiny_open_clip(family, seed)
    if family in HF_CLIP_REWARDS:
        from srpo.rewards.hf_clip_reward import build_tiny_hf_clip

        return build_tiny_hf_clip(family, seed)
    if family in JOINT_REWARDS:
        from srpo.rewards.hpsv3_reward import build_tiny_hpsv3

        return build_tiny_hpsv3(seed)
    if family == "aesthetic_v2.5":
        from srpo.rewards.aesthetic_reward import build_tiny_aesthetic

        return build_tiny_aesthetic(seed)
    raise ValueError(f"unknown reward {family!r}: choose one of {', '.join(KNOWN_REWARDS)}")
