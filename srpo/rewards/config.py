"""Configuration of a reward model: which one, from which weights, at which scale.

``RewardConfig`` is plain data (pydantic v2). :func:`srpo.rewards.load_reward` turns it into a
:class:`~srpo.rewards.base.RewardModel`. Examples::

    RewardConfig(name="hpsv2.1", checkpoint="s3://models/HPS_v2.1_compressed.pt")
    RewardConfig(name="pickscore", checkpoint="/models/PickScore_v1")
    RewardConfig(name="clip", checkpoint="builtin:tiny")   # tiny random model, for tests
"""

from __future__ import annotations

from pydantic import field_validator, model_serializer, model_validator

from srpo.config import StrictModel, one_of
from srpo.published import BUILTIN_PREFIX, WORLD_MODELS, is_builtin, lookup_builtin
from srpo.rewards.scores import SCORE_REWARD, check_score_name

#: Rewards built on open_clip (``architecture`` + a state-dict file).
OPEN_CLIP_REWARDS = ("hpsv2.1", "clip")
#: Rewards built on transformers ``CLIPModel`` (a ``save_pretrained`` folder or a hub id).
HF_CLIP_REWARDS = ("pickscore", "hf_clip")
KNOWN_REWARDS = OPEN_CLIP_REWARDS + HF_CLIP_REWARDS

#: Checkpoint used when ``checkpoint`` is left out (a hub id; needs network access).
DEFAULT_CHECKPOINTS = {"pickscore": "yuvalkirstain/PickScore_v1"}



class RewardConfig(StrictModel):
    """Which reward model to load and how to scale its score.

    ``name``: ``"hpsv2.1"`` (open_clip ViT-H-14 + HPS v2.1 state dict), ``"pickscore"``
    (transformers CLIP-H, ``logit_scale.exp() * cos / 20``), ``"clip"`` (open_clip, plain
    cosine) or ``"hf_clip"`` (transformers CLIP, plain cosine).

    ``checkpoint``: for open_clip rewards a path or fsspec URL of a ``.pt``/``.pth``/``.bin`` or
    ``.safetensors`` state dict (bare or under ``"state_dict"``); for transformers rewards a
    folder, fsspec URL or hub id. ``"builtin:tiny"`` builds a tiny random model (seeded by
    ``seed``) into the cache once and loads it through the same code.

    ``scale``: multiplier on the cosine; ``None`` means the reward's default (1.0, except
    PickScore: ``logit_scale.exp() / 20`` as the SRPO authors use).

    ``name: score`` is a score-only reward (no gradient; ``train.method: grpo`` only): ``function``
    names ``fn(images, prompts) -> scores`` as a registered score (``shapes-bright``, ...; see
    :mod:`srpo.rewards.scores`) or ``module:function``; ``scale`` multiplies it (default 1).

    ``architecture``: open_clip model name (open_clip rewards only).
    ``processor_path``: tokenizer folder (transformers rewards only); default: the checkpoint
    folder when it holds tokenizer files, else the offline CLIP tokenizer.
    """

    name: str
    architecture: str = "ViT-H-14"
    checkpoint: str | None = None
    scale: float | None = None
    processor_path: str | None = None
    seed: int = 0
    function: str | None = None

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return one_of("reward", name, KNOWN_REWARDS + (SCORE_REWARD,))

    @field_validator("function")
    @classmethod
    def _score_name(cls, function: str | None) -> str | None:
        return check_score_name(function) if function is not None else None

    @field_validator("checkpoint")
    @classmethod
    def _known_builtin(cls, checkpoint: str | None) -> str | None:
        if is_builtin(checkpoint):
            lookup_builtin("reward", checkpoint)  # raises with the known names
        return checkpoint

    @model_validator(mode="after")
    def _fields_fit_family(self) -> "RewardConfig":
        if self.name == SCORE_REWARD:
            if self.function is None:
                raise ValueError("reward.name is score but reward.function is not set: name the score function, "
                                 "a registered one (e.g. shapes-bright) or module:function")
            extra = [k for k in ("checkpoint", "processor_path") if getattr(self, k) is not None]
            extra += ["architecture"] if "architecture" in self.model_fields_set else []
            if extra:
                raise ValueError(f"reward.name is score, which does not read {', '.join(extra)}: remove them")
            return self
        if self.function is not None:
            raise ValueError(f"reward.function is set but reward.name is {self.name!r}: function belongs to "
                             "name: score (a score-only reward); remove it or set name: score")
        if self.name in OPEN_CLIP_REWARDS and self.processor_path is not None:
            raise ValueError(f"processor_path is only used by transformers rewards "
                             f"({', '.join(HF_CLIP_REWARDS)}); reward {self.name!r} uses open_clip's "
                             "tokenizer for its architecture: remove processor_path")
        if self.name in HF_CLIP_REWARDS and "architecture" in self.model_fields_set:
            raise ValueError(f"architecture is only used by open_clip rewards "
                             f"({', '.join(OPEN_CLIP_REWARDS)}); reward {self.name!r} reads its "
                             "architecture from the checkpoint's config.json: remove architecture")
        if self.world_model is not None and self.name not in HF_CLIP_REWARDS:
            raise ValueError(f"{self.checkpoint!r} is a transformers CLIP folder: use name 'hf_clip' with it")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_architecture(self, handler):
        """Dumps of transformers rewards leave ``architecture`` out, so that they validate again
        (ZenML dumps step parameters and re-validates them in the step)."""
        data = handler(self)
        if self.name in HF_CLIP_REWARDS + (SCORE_REWARD,) and isinstance(data, dict):
            data.pop("architecture", None)
        if self.name != SCORE_REWARD and isinstance(data, dict):
            data.pop("function", None)
        return data

    @property
    def score_only(self) -> bool:
        """True for a score-only reward (no gradient: ``train.method: grpo`` only)."""
        return self.name == SCORE_REWARD

    @property
    def is_builtin(self) -> bool:
        """True when ``checkpoint`` names a built-in model (resolved by :mod:`srpo.published`)."""
        return is_builtin(self.checkpoint)

    @property
    def world_model(self) -> str | None:
        """The published shapes-world model this checkpoint names (``builtin:shapes-clip``), if any."""
        name = self.checkpoint[len(BUILTIN_PREFIX):] if self.is_builtin else None
        return name if name in WORLD_MODELS else None
