"""The training methods: THE registry of ``train.method`` names.

Each row is a :class:`~srpo.training.methods.base.Method` class: its name, a one-line summary,
what it needs (``takes_score_only``: a score-only reward is enough; ``has_inversion``: the
inversion branch belongs to it), its settings check and its update. Adding a method is one file
in this package and one row here.

The config (``srpo.config``) sits below training in the layers and cannot import this registry:
``TrainConfig.method`` is a plain string there, and the run's one validation
(:func:`check_method`, called by :meth:`srpo.training.job.TrainingJob.validate` and by the
trainer) refuses a name that is not a row, listing the rows.
"""

from __future__ import annotations

from srpo.training.methods.base import Level, Method, MethodContext, StepLog
from srpo.training.methods.direct_align import SRPO, DirectAlign, Draft, DraftLV, ReFL
from srpo.training.methods.awm import AWM
from srpo.training.methods.drtune import DRTune
from srpo.training.methods.grpo import GRPO
from srpo.training.methods.mixgrpo import MixGRPO
from srpo.training.methods.nft import NFT

__all__ = ["METHODS", "Level", "Method", "MethodContext", "StepLog", "check_method", "method_class", "method_for"]

#: Every ``train.method`` name and its method class.
METHODS: dict[str, type[Method]] = {m.name: m for m in (SRPO, DirectAlign, ReFL, DraftLV, Draft, DRTune, GRPO,
                                                         MixGRPO, NFT, AWM)}


def method_class(name: str) -> type[Method]:
    """The registry row ``name`` names; a clear error listing the rows otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        rows = "; ".join(f"{n}: {m.summary}" for n, m in METHODS.items())
        raise ValueError(f"train.method {name!r} is not a training method: use one of {sorted(METHODS)} "
                         f"({rows})") from None


def method_for(cfg) -> Method:
    """A fresh method object for ``cfg.method`` (it may hold state of its own, e.g. GRPO's reference, NFT's old
    policy); give it ``method.configure(cfg)``, the config with the settings blocks it reads filled."""
    return method_class(cfg.method)()


def check_method(cfg, rollout_cfg, score_only: bool = False, reward_label: str = "") -> None:
    """Refuse a method name that is not a row, settings its row refuses, or a score-only reward
    (``score_only``) for a method that backpropagates through the reward."""
    method = method_class(cfg.method)
    if score_only and not method.takes_score_only:
        takers = " or ".join(sorted(n for n, m in METHODS.items() if m.takes_score_only))
        raise ValueError(f"train.method {cfg.method!r} backpropagates through the reward, but the reward "
                         f"{reward_label} is score-only: use train.method {takers}, or a differentiable "
                         "(CLIP-style) reward such as hpsv2.1, pickscore, clip or hf_clip")
    method.validate(cfg, rollout_cfg)
