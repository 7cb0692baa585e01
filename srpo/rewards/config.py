"""Configuration of a reward model: which one, from which weights, at which scale.

``RewardConfig`` is plain data (pydantic v2). :func:`srpo.rewards.load_reward` turns it into a
:class:`~srpo.rewards.base.RewardModel`. Examples::

    RewardConfig(name="hpsv2.1", checkpoint="s3://models/HPS_v2.1_compressed.pt")
    RewardConfig(name="pickscore", checkpoint="/models/PickScore_v1")
    RewardConfig(name="clip", checkpoint="builtin:tiny")   # tiny random model, for tests
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_serializer, model_validator

from srpo.config import TEXT_FORMS, ControlWords, StrictModel, one_of
from srpo.published import BUILTIN_PREFIX, WORLD_MODELS, is_builtin, lookup_builtin
from srpo.rewards.registry import names
from srpo.rewards.scores import SCORE_REWARD, check_score_name

# The name lists below are views of the one table, srpo.rewards.registry.REWARDS.
#: Rewards built on open_clip (``architecture`` + a state-dict file).
OPEN_CLIP_REWARDS = names(reads="architecture")
#: Rewards built on transformers ``CLIPModel`` (a ``save_pretrained`` folder or a hub id).
HF_CLIP_REWARDS = names("feature", reads="processor_path")
#: Rewards that score image and prompt jointly (no separate image/text features): HPSv3.
JOINT_REWARDS = names("joint")
#: Rewards with no text input (``score(images)``); trained through the image-only relative form.
IMAGE_ONLY_REWARDS = names("image_only")
#: Rewards with separate image and text features (the :class:`~srpo.rewards.base.RewardModel` protocol).
FEATURE_REWARDS = names("feature")
#: Rewards with a model (every kind but score-only).
KNOWN_REWARDS = names("feature", "joint", "image_only")

#: Checkpoint used when ``checkpoint`` is left out (a hub id; needs network access).
DEFAULT_CHECKPOINTS = {"pickscore": "yuvalkirstain/PickScore_v1"}



class RewardConfig(StrictModel):
    """Which reward model to load and how to scale its score.

    ``name``: ``"hpsv2.1"`` (open_clip ViT-H-14 + HPS v2.1 state dict), ``"pickscore"``
    (transformers CLIP-H, ``logit_scale.exp() * cos / 20``), ``"clip"`` (open_clip, plain
    cosine), ``"hf_clip"`` (transformers CLIP, plain cosine), ``"hpsv3"`` (Qwen2-VL + reward head,
    scoring image and prompt jointly; see :mod:`srpo.rewards.hpsv3_reward`) or ``"aesthetic_v2.5"``
    (image only; ``checkpoint`` is the head file, ``processor_path`` the SigLIP encoder folder).

    ``checkpoint``: for open_clip rewards a path or fsspec URL of a ``.pt``/``.pth``/``.bin`` or
    ``.safetensors`` state dict (bare or under ``"state_dict"``); for transformers rewards a
    folder, fsspec URL or hub id. ``"builtin:tiny"`` builds a tiny random model (seeded by
    ``seed``) into the cache once and loads it through the same code.

    ``scale``: multiplier on the cosine; ``None`` means the reward's default (1.0, except
    PickScore: ``logit_scale.exp() / 20`` as the SRPO authors use).

    ``name: score`` is a score-only reward (no gradient; ``train.method: grpo`` only): ``function``
    names ``fn(images, prompts) -> scores`` as a registered score (``shapes-bright``, ...; see
    :mod:`srpo.rewards.scores`) or ``module:function``; or ``metric`` is an evaluation-suite
    metric's config (``{name: imagereward, checkpoint: ...}``, as under ``metrics:``), scored
    without gradient. ``scale`` multiplies it (default 1).

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
    metric: Optional[dict] = None  # name: score: an evaluation metric's config (srpo.evaluation.config.MetricConfig)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return one_of("reward", name, names())

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
            if (self.function is None) == (self.metric is None):
                raise ValueError("reward.name is score but " + ("both reward.function and reward.metric are set: "
                                 "keep one" if self.function is not None else "neither reward.function nor "
                                 "reward.metric is set: name the score function (a registered one, e.g. "
                                 "shapes-bright, or module:function) or give an evaluation metric's config, e.g. "
                                 "metric: {name: imagereward, checkpoint: ...}"))
            if self.metric is not None and not isinstance(self.metric.get("name"), str):
                raise ValueError(f"reward.metric {self.metric!r} has no name: give the evaluation metric's name, "
                                 "e.g. metric: {name: imagereward}")
            extra = [k for k in ("checkpoint", "processor_path") if getattr(self, k) is not None]
            extra += ["architecture"] if "architecture" in self.model_fields_set else []
            if extra:
                raise ValueError(f"reward.name is score, which does not read {', '.join(extra)}: remove them")
            return self
        if self.metric is not None:
            raise ValueError(f"reward.metric is set but reward.name is {self.name!r}: metric belongs to name: score "
                             "(an evaluation metric as a score-only reward); remove it or set name: score")
        if self.function is not None:
            raise ValueError(f"reward.function is set but reward.name is {self.name!r}: function belongs to "
                             "name: score (a score-only reward); remove it or set name: score")
        if self.name in OPEN_CLIP_REWARDS and self.processor_path is not None:
            raise ValueError(f"processor_path is only used by transformers rewards "
                             f"({', '.join(names(reads='processor_path'))}); reward {self.name!r} uses open_clip's "
                             "tokenizer for its architecture: remove processor_path")
        if self.name not in OPEN_CLIP_REWARDS and "architecture" in self.model_fields_set:
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
        if self.name not in OPEN_CLIP_REWARDS and isinstance(data, dict):
            data.pop("architecture", None)
        if self.name != SCORE_REWARD and isinstance(data, dict):
            data.pop("function", None)
        if self.metric is None and isinstance(data, dict):
            data.pop("metric", None)
        return data

    @property
    def score_label(self) -> str | None:
        """A score-only reward's name in messages: its function, or ``metric:<name>``."""
        return self.function or (f"metric:{self.metric['name']}" if self.metric else None)

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


def check_content_weight(weight: float, *, multi: bool, prompted: bool, label: str = "the training reward") -> None:
    """Refuse ``train.content_weight`` where it has no single prompted reward to add (the config check before any
    weight loads, :meth:`srpo.training.job.TrainingJob.validate_run`, and the trainer's on loaded rewards):
    a ``rewards:`` block says it with a ``plain`` entry; a score-only or image-only reward scores no prompt."""
    if not weight or (prompted and not multi):
        return
    why = (f"the run trains against a rewards: block: add a plain entry (form: plain, weight: {weight}) instead"
           if multi else f"{label} scores no prompt (score-only or image-only)")
    raise ValueError(f"train.content_weight {weight} adds the reward on the plain prompt, but {why}; or set "
                     "content_weight 0")


def check_trainable(reward: RewardConfig, form: str = "weighted", setting: str = "reward") -> None:
    """Refuse a training reward whose kind does not fit the reward form ``form`` (``train.reward_form``).

    Feature rewards (HPS v2.1, PickScore, CLIP) and joint ones (HPSv3: the form is combined on the
    scores of the prompt variants) take every text form and ``plain``; image-only rewards (Aesthetic
    v2.5) take ``image_relative`` (supplement S1) and ``plain`` only; ``image_relative`` needs an
    image-only reward. Score-only rewards are the method registry's
    (:func:`srpo.training.methods.check_method`). The run's validation calls it
    (:meth:`srpo.training.job.TrainingJob.validate_run`).
    """
    if reward.name == SCORE_REWARD:
        return
    if reward.name in IMAGE_ONLY_REWARDS and form in TEXT_FORMS:
        raise ValueError(f"{setting}.name {reward.name!r} reads no text, so reward form {form!r} has nowhere to put "
                         "its control words: use train.reward_form 'image_relative' (score of the image minus the "
                         "score of a lightly noised copy, supplement S1) or 'plain'")
    if reward.name not in IMAGE_ONLY_REWARDS and form == "image_relative":
        raise ValueError(f"reward form 'image_relative' is for image-only rewards ({', '.join(IMAGE_ONLY_REWARDS)}), "
                         f"but {setting}.name is {reward.name!r}, which reads text: use train.reward_form 'weighted', "
                         "'srp', 'sgp', 'cfg' or 'plain'")


#: The reward forms a weighted entry may use (``image_relative``: image-only rewards, supplement S1).
EntryForm = Literal["plain", "sgp", "srp", "cfg", "weighted", "image_relative"]


class RewardUse(StrictModel):
    """How one reward enters a multi-reward (shared by :class:`WeightedRewardConfig` and the loaded
    :class:`~srpo.rewards.combine.RewardTerm`).

    ``positive_words`` / ``negative_words``: control words (the step's word is
    ``words[step % len(words)]``); ``k_denoise`` / ``k_inversion``: the weighted form's additive
    weight from the grid's lowest to highest level; ``noise_level``: the noised copy's pixel-noise
    standard deviation for ``image_relative``; ``against``: what the image is compared with, the prompt
    (``text``) or, for an edit, its source image (``source``), the change from it (``direction``) or its
    edges (``structure``: pixels, the reward is not read): feature rewards, form ``plain``
    (:mod:`srpo.rewards.edit_reward`).
    """

    weight: float = 1.0
    against: Literal["text", "source", "direction", "structure"] = "text"
    form: EntryForm = "weighted"
    positive_words: ControlWords = Field(default_factory=list)
    negative_words: ControlWords = Field(default_factory=list)
    k_denoise: tuple[float, float] = (0.10, 0.25)
    k_inversion: tuple[float, float] = (0.30, 0.01)
    cfg_k: float = 1.5
    noise_level: float = Field(0.05, gt=0, le=1)


class WeightedRewardConfig(RewardUse):
    """One entry of a multi-reward: a reward, its weight in the sum, and how SRP uses it (the fields
    of :class:`RewardUse`). ``name`` labels the term in logs (default ``<reward name>-<index>``).
    """

    reward: RewardConfig
    name: Optional[str] = None

    @model_validator(mode="after")
    def _form_fits_reward(self) -> "WeightedRewardConfig":
        if self.reward.score_only:
            raise ValueError("a score-only reward (name: score) cannot be a rewards: entry: entries are "
                             "differentiable rewards; train with train.method: grpo and reward: name: score instead")
        image_only = self.reward.name in IMAGE_ONLY_REWARDS
        if self.against != "text":
            if self.reward.name not in FEATURE_REWARDS:
                raise ValueError(f"against {self.against!r} compares image features, but reward {self.reward.name!r} "
                                 f"has none: use a feature reward ({', '.join(FEATURE_REWARDS)}) or against 'text'")
            if self.form != "plain":
                raise ValueError(f"against {self.against!r} takes no control words, so form {self.form!r} has "
                                 "nowhere to put them: use form 'plain' (put the words on an against: text entry)")
            return self
        if image_only and self.form in TEXT_FORMS:
            raise ValueError(f"form {self.form!r} puts control words on the reward's text side, but reward "
                             f"{self.reward.name!r} reads no text: use form 'image_relative' (supplement S1) or 'plain'")
        if not image_only and self.form == "image_relative":
            raise ValueError(f"form 'image_relative' is for image-only rewards ({', '.join(IMAGE_ONLY_REWARDS)}); "
                             f"reward {self.reward.name!r} reads text: use 'weighted', 'srp', 'sgp', 'cfg' or 'plain'")
        if self.form in TEXT_FORMS and not self.positive_words:
            raise ValueError(f"form {self.form!r} needs positive_words (at least one), or use form 'plain'")
        if self.form in ("srp", "cfg", "weighted") and not self.negative_words:
            raise ValueError(f"form {self.form!r} needs negative_words (at least one), or use form 'sgp' or 'plain'")
        return self


class MultiRewardConfig(StrictModel):
    """``rewards:`` a list of weighted entries; the training reward is ``sum(weight * reward)``."""

    rewards: list[WeightedRewardConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "MultiRewardConfig":
        names = [e.name or f"{e.reward.name}-{i}" for i, e in enumerate(self.rewards)]
        if len(set(names)) != len(names):
            raise ValueError(f"reward entry names must be unique, got {names}: set `name` on each entry")
        return self
