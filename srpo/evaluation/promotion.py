"""The promotion rule: does a new model version replace the one in production?

Numbers in, decision out (no ZenML here; ``steps/promote_model.py`` reads and writes the stages).
The new version and the reference (production's version, or the base model for a Model's first
version) were scored on the same held-out prompts with the same seeds and metrics, so each metric
is compared on per-prompt differences with a paired bootstrap, resampled within categories
(:func:`srpo.evaluation.bootstrap.bootstrap_ci`). The rule:

1. the guard published trained weights (it did not fall back to the base model's, update 0);
2. the primary metric is better by at least ``margin`` and its interval lies above zero;
3. no judge metric is worse beyond its tolerance: the interval's lower end is above ``-tolerance``
   (a non-inferiority test: "not shown to be worse" is not enough).

All three: ``production``. Guard and judges pass and the primary metric is better but not by the
margin, or not significantly: ``staging`` (promising, not proven). Otherwise no stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from srpo.evaluation.bootstrap import bootstrap_ci

PRODUCTION, STAGING, NONE = "production", "staging", "none"


class PromotionConfig(BaseModel):
    """The declared rule (the run config's ``promotion:`` section)."""

    model_config = ConfigDict(extra="forbid")

    primary_metric: str = Field(description="the metric the new version must improve (a reward or metric name)")
    margin: float = Field(0.0, ge=0, description="how much better the primary metric's mean difference must be")
    judges: dict[str, float] = Field(default_factory=dict, description="metric -> tolerance: how much worse it may "
                                     "be (the interval's lower end must stay above -tolerance)")
    require_trained_update: bool = Field(True, description="refuse a run whose guard published the base weights")
    staging_when_promising: bool = Field(True, description="set 'staging' when only the primary test falls short")
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0


@dataclass
class MetricComparison:
    metric: str
    n: int
    delta: float  # mean (macro over categories) of new - reference
    ci_low: float
    ci_high: float


@dataclass
class Decision:
    stage: str  # "production", "staging" or "none"
    reason: str
    against: str  # "production" or "base"
    code: str = ""  # a short reason for tags and listings: better, promising, not-better, judge-worse, guard-base-weights
    comparisons: list[MetricComparison] = field(default_factory=list)

    def metadata(self) -> dict:
        """JSON-able numbers for the version's metadata."""
        return {"promotion_stage": self.stage, "promotion_reason": self.reason, "promotion_against": self.against,
                "promotion_code": self.code,
                "promotion_comparisons": {c.metric: {k: v for k, v in asdict(c).items() if k != "metric"}
                                          for c in self.comparisons}}


def compare(new: Sequence[float], reference: Sequence[float], categories: Optional[Sequence[str]],
            cfg: PromotionConfig, metric: str) -> MetricComparison:
    """Paired bootstrap of ``new - reference`` (per prompt), resampled within ``categories``."""
    diff = np.asarray(new, dtype=float) - np.asarray(reference, dtype=float)
    if diff.shape[0] == 0:
        raise ValueError(f"metric {metric!r} has no scores to compare")
    groups = list(categories) if categories is not None and len(set(categories)) > 1 else None
    est, lo, hi = bootstrap_ci(diff, groups=groups, samples=cfg.bootstrap_samples, confidence=cfg.confidence,
                               seed=cfg.seed)
    return MetricComparison(metric, int(diff.shape[0]), est, lo, hi)


def decide(new: Mapping[str, Sequence[float]], reference: Mapping[str, Sequence[float]],
           categories: Optional[Sequence[str]], cfg: PromotionConfig, *, published_update: Optional[int],
           against: str = "production") -> Decision:
    """Apply the rule to per-prompt scores ``{metric: [N]}`` of the new version and the reference.

    ``published_update``: the update whose weights training published (0: the guard kept the base
    weights; ``None``: unknown, e.g. a version trained before this field existed).

    Raises:
        ValueError: a metric the rule names is missing, or the two score lists differ in length.
    """
    needed = [cfg.primary_metric, *cfg.judges]
    for name in needed:
        for side, scores in (("new version", new), (against, reference)):
            if name not in scores:
                raise ValueError(f"promotion metric {name!r} was not scored for the {side} (scored: "
                                 f"{sorted(scores)}): name a reward or metric the evaluation computes")
        if len(new[name]) != len(reference[name]):
            raise ValueError(f"metric {name!r}: {len(new[name])} scores for the new version but "
                             f"{len(reference[name])} for the {against}: compare on the same prompts")
    comparisons = [compare(new[m], reference[m], categories, cfg, m) for m in needed]
    primary, judges = comparisons[0], comparisons[1:]
    if cfg.require_trained_update and published_update == 0:
        return Decision(NONE, "the guard published the base weights (update 0): nothing trained to promote",
                        against, "guard-base-weights", comparisons)
    worse = [j for j in judges if j.ci_low <= -cfg.judges[j.metric]]
    if worse:
        text = "; ".join(f"{j.metric} {j.delta:+.4g} [{j.ci_low:+.4g}, {j.ci_high:+.4g}] may be worse than "
                         f"-{cfg.judges[j.metric]:g}" for j in worse)
        return Decision(NONE, f"judge metric(s) not shown within tolerance vs {against}: {text}", against, "judge-worse", comparisons)
    summary = (f"{primary.metric} {primary.delta:+.4g} [{primary.ci_low:+.4g}, {primary.ci_high:+.4g}] vs {against} "
               f"(margin {cfg.margin:g}, {len(judges)} judge(s) within tolerance)")
    if primary.delta >= cfg.margin and primary.ci_low > 0:
        return Decision(PRODUCTION, f"better: {summary}", against, "better", comparisons)
    if cfg.staging_when_promising and primary.delta > 0:
        return Decision(STAGING, f"promising, not proven: {summary}", against, "promising",
                        comparisons)
    return Decision(NONE, f"not better: {summary}", against, "not-better", comparisons)


def comparable(new_settings: Mapping, reference_settings: Optional[Mapping]) -> Optional[str]:
    """``None`` when two evaluations used the same prompts, seeds and metrics; else what differs."""
    if reference_settings is None:
        return "production's version has no recorded evaluation settings"
    differ = sorted(k for k in set(new_settings) | set(reference_settings)
                    if new_settings.get(k) != reference_settings.get(k))
    return None if not differ else f"the evaluations differ in {differ}"


def check_promotion(cfg: PromotionConfig, scored: set[str]) -> None:
    """Refuse, when the config compiles, a rule naming a metric the evaluation will not score."""
    missing = [m for m in [cfg.primary_metric, *cfg.judges] if m not in scored]
    if missing:
        raise ValueError(f"promotion metric(s) {missing} are not scored by the evaluation: name one of "
                         f"{sorted(scored)} ('reward' is the training reward; add others under metrics: or "
                         "extra_rewards:)")
