"""Reward adapters behind one small protocol (image features, text features, score).

``load_reward(RewardConfig(...))`` returns a frozen :class:`RewardModel` (or, for ``name: score``,
a score-only :class:`~srpo.rewards.scores.ScoreReward`); see
:mod:`srpo.rewards.base` for the protocol. open_clip and transformers are imported only when a
reward that needs them is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from srpo.rewards.base import CLIP_MEAN, CLIP_STD, RewardModel, preprocess_for_clip
from srpo.rewards.config import HF_CLIP_REWARDS, KNOWN_REWARDS, OPEN_CLIP_REWARDS, RewardConfig

__all__ = ["CLIP_MEAN", "CLIP_STD", "KNOWN_REWARDS", "RewardConfig", "RewardModel", "load_reward",
           "preprocess_for_clip"]


def load_reward(config: RewardConfig, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> RewardModel:
    """Load the frozen reward model that ``config`` describes onto ``device`` in ``dtype``."""
    if config.name in OPEN_CLIP_REWARDS:
        from srpo.rewards.open_clip_reward import load_open_clip_reward

        reward: RewardModel = load_open_clip_reward(config)
    elif config.name in HF_CLIP_REWARDS:
        from srpo.rewards.hf_clip_reward import load_hf_clip_reward

        reward = load_hf_clip_reward(config)
    elif config.score_only:
        from srpo.rewards.scores import ScoreReward, resolve_score

        return ScoreReward(resolve_score(config.function), config.function,  # type: ignore[return-value]
                           1.0 if config.scale is None else config.scale).to(device=device)
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
    raise ValueError(f"unknown reward {family!r}: choose one of {', '.join(KNOWN_REWARDS)}")
