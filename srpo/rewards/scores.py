"""Score-only rewards: a function of images and prompts that returns scores, with no gradient.

Detectors, OCR, a VLM judge or the shapes world's pixel grader score images but give nothing to
backpropagate through, so only the methods whose registry row takes score-only rewards (the
likelihood-free and policy-gradient methods: grpo, mixgrpo, nft, awm) train on them; the run's validation refuses them for the
gradient methods (:func:`srpo.training.methods.check_method`).

A score function is ``fn(images [B,3,H,W] in [0,1], prompts: list[str]) -> scores [B]`` (an edit
judge also takes ``sources=`` [B,3,H,W], the source images, which :meth:`ScoreReward.score` passes on), named
either by a registered name (:data:`SCORE_FUNCTIONS`: the shapes world's pixel grader, plain tensor
code below this layer, imported when first used) or directly as ``"module:function"`` (a user's
own function); or it is an evaluation metric (``reward.metric``: ImageReward, PickScore, Aesthetic
v2.5, ... without gradient, :func:`metric_score`). The evaluation suite sits above this layer, so
it registers its scorer here when it is imported (:func:`register_metric_scorer`): this layer names
nothing above it.

:class:`ScoreReward` wraps one as a frozen ``torch.nn.Module`` with the protocol's ``score`` and
``scale`` (and no ``image_features``: it has no features to differentiate).
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

import torch

ScoreFn = Callable[[torch.Tensor, list[str]], torch.Tensor]

#: Registered score functions: name -> "module:function" (imported on first use).
SCORE_FUNCTIONS: dict[str, str] = {
    "shapes-bright": "srpo.world.scoring:bright_score",
    "shapes-dark": "srpo.world.scoring:dark_score",
    "shapes-vivid": "srpo.world.scoring:vivid_score",
    "shapes-muted": "srpo.world.scoring:muted_score",
    "shapes-edit": "srpo.world.edits:edit_score",  # edits: done + kept, needs sources=
}

#: The ``reward.name`` of a score-only reward.
SCORE_REWARD = "score"


def register_score(name: str, target: str) -> None:
    """Register ``"module:function"`` under ``name`` (a reward config then names it ``function: <name>``)."""
    check_score_name(target)
    SCORE_FUNCTIONS[name] = target


def check_score_name(function: str) -> str:
    """``function`` when it is a registered name or has the form ``module:function``; else a clear error."""
    if function in SCORE_FUNCTIONS:
        return function
    module, sep, attr = function.partition(":")
    if not (sep and module and attr):
        raise ValueError(f"reward.function {function!r} is neither a registered score ({', '.join(SCORE_FUNCTIONS)}) "
                         "nor 'module:function': name a function fn(images, prompts) -> scores as package.module:fn")
    return function


#: What turns an evaluation metric's config into a score function: ``fn(metric: dict, device) -> ScoreFn``,
#: registered by :mod:`srpo.evaluation.metrics` when it is imported (the evaluation layer sits above this one).
_METRIC_SCORER: list[Callable[..., ScoreFn]] = []


def register_metric_scorer(scorer: Callable[..., ScoreFn]) -> None:
    """Make ``reward.metric`` loadable: ``scorer(metric_config_dict, device)`` returns its score function."""
    _METRIC_SCORER[:] = [scorer]


def metric_score(metric: dict, device="cpu") -> ScoreFn:
    """The score function of an evaluation-suite metric (its config as a dict, validated there)."""
    if not _METRIC_SCORER:
        raise RuntimeError(f"reward.metric {metric.get('name')!r} is an evaluation-suite metric, but this process has "
                           "not imported the suite (srpo.evaluation.metrics registers its scorer on import): import "
                           "it before loading the reward")
    return _METRIC_SCORER[0](metric, device)


def load_score_reward(config, device="cpu") -> "ScoreReward":
    """The score-only reward of a ``name: score`` :class:`~srpo.rewards.config.RewardConfig` on ``device``."""
    fn = metric_score(config.metric, device) if config.metric else resolve_score(config.function)
    return ScoreReward(fn, config.score_label, 1.0 if config.scale is None else config.scale).to(device=device)


def resolve_score(function: str) -> ScoreFn:
    """The callable that ``function`` (a registered name or ``module:function``) names."""
    target = SCORE_FUNCTIONS.get(check_score_name(function), function)
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward.function {function!r} ({target}) cannot be imported: {err}. Check the module "
                         "is on PYTHONPATH and defines the function") from err
    if not callable(fn):
        raise ValueError(f"reward.function {function!r} ({target}) is not callable: name a function")
    return fn


class ScoreReward(torch.nn.Module):
    """A frozen score-only reward: ``score(images, prompts) -> scale * fn(images, prompts)`` [B], no grad."""

    score_only = True

    def __init__(self, fn: ScoreFn, name: str, scale: float = 1.0) -> None:
        super().__init__()
        self.fn, self.name, self.scale = fn, name, float(scale)
        # a frozen empty parameter: .to() moves it and callers can read the device as for any reward
        self.anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str], sources: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [B]; ``sources`` (edits: the source images [B,3,H,W]) go to the function as ``sources=``."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts: give one prompt per image")
        extra = {} if sources is None else {"sources": sources.detach()}
        scores = torch.as_tensor(self.fn(images.detach(), list(prompts), **extra), dtype=torch.float32)
        if scores.shape != (images.shape[0],):
            raise ValueError(f"score function {self.name!r} returned shape {tuple(scores.shape)} for "
                             f"{images.shape[0]} images: return one score per image, shape [B]")
        return self.scale * scores.to(images.device)  # [B]

    def forward(self, images: torch.Tensor, prompts: Sequence[str], sources: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.score(images, prompts, sources)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"reward {self.name!r} is score-only: it has no image features to backpropagate "
                        "through; train it with train.method: grpo")

    text_features = image_features

    def train(self, mode: bool = True) -> "ScoreReward":
        return super().train(False)


def is_score_only(reward) -> bool:
    """True for rewards that only score (no differentiable image features)."""
    return bool(getattr(reward, "score_only", False))
