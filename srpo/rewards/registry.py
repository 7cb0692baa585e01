"""The one table of rewards: each name, its kind, where its loader lives and what its published tower costs.

Config validation (:mod:`srpo.rewards.config`), loading (:func:`srpo.rewards.load_reward`), the
``builtin:tiny`` folders, the control-word check and the memory plan all read :data:`REWARDS`.
Adding a reward is its own module plus one row here. Loaders are named ``"module:function"``
inside this package and imported on first use, so validating a config imports neither open_clip
nor transformers.

Kinds:

- ``feature``: separate image and text features (:class:`~srpo.rewards.base.RewardModel`);
- ``joint``: ``score(images, prompts)`` only (HPSv3: the form is combined over prompt variants);
- ``image_only``: ``score_images(images)``, no text (Aesthetic v2.5: the image-only relative form);
- ``score_only``: scores without gradient (``name: score``; for the methods whose registry row takes score-only rewards).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

RewardKind = Literal["feature", "joint", "image_only", "score_only"]


@dataclass(frozen=True)
class Tower:
    """What a published reward model costs the memory plan: parameters, and the image side's saved
    activations per image in fp32 (bytes; scale by the compute dtype's size / 4)."""

    label: str
    params: float
    activation_bytes_per_image: int


#: open_clip ViT-H-14 (HPSv2.1, CLIP-H; PickScore is the same architecture in transformers): both
#: towers' parameters; the image tower's saved activations at 224 px (32 blocks x 257 tokens x
#: 1280 wide x ~16 saved tensors of that size x 4 bytes).
VIT_H_14 = Tower("ViT-H-14", 986e6, 32 * 257 * 1280 * 16 * 4)
#: Aesthetic v2.5: SigLIP so400m-patch14-384's vision tower (27 blocks x 729 tokens x 1152 wide) and its head.
SIGLIP_SO400M = Tower("SigLIP so400m", 428e6, 27 * 729 * 1152 * 16 * 4)
#: HPSv3: Qwen2-VL-7B without its LM head (7.75 B, docs/benchmarks/reward_cost.json); saved activations
#: of one forward: the vision tower (32 blocks x 1,024 patches at 448 px x 1280 wide x ~16) and the
#: decoder (28 layers x ~800 tokens: 256 image tokens, the instruction and the prompt, x (8 x 3584
#: hidden + 3 x 18944 MLP) wide), fp32. A joint reward runs one forward per prompt variant its form reads.
QWEN2_VL_7B = Tower("Qwen2-VL-7B", 7.75e9, (32 * 1024 * 1280 * 16 + 28 * 800 * (8 * 3584 + 3 * 18944)) * 4)


@dataclass(frozen=True)
class RewardSpec:
    """One reward name's row.

    ``load``: ``"module:function"`` (in this package) building the reward from its
    :class:`~srpo.rewards.config.RewardConfig` (score-only: ``(config, device)``); ``tiny``: the
    ``builtin:tiny`` builder, called as ``fn(name=..., seed=...) -> folder``; ``text``: the function
    ``fn(config) -> TextContext | None`` that reads the reward's tokenizer and text length without
    its weights (None: the reward reads no text or has no limit worth checking); ``reads``: the
    config fields only this reward's family uses (``architecture``: open_clip; ``processor_path``:
    transformers); ``tower``: the published model, for the memory plan.
    """

    name: str
    kind: RewardKind
    load: str
    tiny: str | None = None
    text: str | None = None
    reads: tuple[str, ...] = ()
    tower: Tower | None = None

    def loader(self) -> Callable:
        return import_here(self.load)


_OPEN_CLIP = dict(load="srpo.rewards.open_clip_reward:load_open_clip_reward",
                  tiny="srpo.rewards.open_clip_reward:build_tiny_open_clip",
                  text="srpo.rewards.open_clip_reward:text_context", reads=("architecture",))
_HF_CLIP = dict(load="srpo.rewards.hf_clip_reward:load_hf_clip_reward",
                tiny="srpo.rewards.hf_clip_reward:build_tiny_hf_clip",
                text="srpo.rewards.hf_clip_reward:text_context", reads=("processor_path",))

#: Every reward, by ``reward.name``.
REWARDS: dict[str, RewardSpec] = {spec.name: spec for spec in (
    RewardSpec("hpsv2.1", "feature", tower=VIT_H_14, **_OPEN_CLIP),
    RewardSpec("clip", "feature", tower=VIT_H_14, **_OPEN_CLIP),
    RewardSpec("pickscore", "feature", tower=VIT_H_14, **_HF_CLIP),
    RewardSpec("hf_clip", "feature", tower=VIT_H_14, **_HF_CLIP),
    RewardSpec("hpsv3", "joint", "srpo.rewards.hpsv3_reward:load_hpsv3_reward",
               tiny="srpo.rewards.hpsv3_reward:build_tiny_hpsv3", reads=("processor_path",), tower=QWEN2_VL_7B),
    RewardSpec("aesthetic_v2.5", "image_only", "srpo.rewards.aesthetic_reward:load_aesthetic_reward",
               tiny="srpo.rewards.aesthetic_reward:build_tiny_aesthetic", reads=("processor_path",),
               tower=SIGLIP_SO400M),
    RewardSpec("score", "score_only", "srpo.rewards.scores:load_score_reward"),
)}


def names(*kinds: RewardKind, reads: str | None = None) -> tuple[str, ...]:
    """The reward names of ``kinds`` (all kinds when none is given), in table order; ``reads``: only
    those that read that config field."""
    return tuple(name for name, spec in REWARDS.items() if (not kinds or spec.kind in kinds)
                 and (reads is None or reads in spec.reads))


def reward_spec(name: str) -> RewardSpec:
    """The row of ``name``; an error listing the known names otherwise."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}: choose one of {', '.join(REWARDS)}")
    return REWARDS[name]


def import_here(target: str) -> Callable:
    """The function ``"module:function"`` names (a module of this package: the loaders' heavy imports wait)."""
    module, _, attr = target.partition(":")
    assert module.startswith("srpo.rewards."), target  # the table names only this package's own modules
    return getattr(importlib.import_module(module), attr)
