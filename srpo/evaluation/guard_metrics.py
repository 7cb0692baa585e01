"""The training guard's metric functions, built from ``train.guard.metrics``.

A guard metric is ``images [N, 3, H, W] in [0, 1], prompts -> [N]`` (or ``{name: [N]}``), the
interface :class:`srpo.training.guard.Guard` takes. Names:

- ``reward``: the training reward on the plain prompt (the trainer's loaded reward model);
- ``colourfulness``, ``saturation``, ``brightness``, ``contrast``, ``hf_energy``: :mod:`srpo.image_stats`
  (the guard's rules compare them with the base model's images: drift);
- an evaluation-suite metric (``pickscore``, ``imagereward``, ``aesthetic_v2.5``, ...) or an extra
  reward: configured under that name in the pipeline's ``metrics`` / ``extra_rewards``, else the
  metric's defaults (:class:`~srpo.evaluation.config.MetricConfig`);
- ``world.<key>``: the shapes-world grader, built by :func:`srpo.world.guard_metrics.world_guard_metrics`
  and passed here as ``extra``.
"""

from __future__ import annotations

from typing import Mapping, Optional

from srpo.config import GUARD_REWARD, GUARD_WORLD_PREFIX, GuardConfig
from srpo.evaluation.config import EXTERNAL_METRICS, MODEL_METRICS, MetricConfig
from srpo.image_stats import IMAGE_STATS, image_statistics
from srpo.rewards import RewardConfig
from srpo.training.guard import MetricFn

STATS_KEY = "image_stats"


def guard_metric_error(name: str, metric_configs: Mapping[str, MetricConfig] = (),
                       extra_rewards: Mapping[str, RewardConfig] = (), extra_names=()) -> Optional[str]:
    """Why ``name`` cannot be a guard metric (``None`` when it can), naming the fix."""
    known = {GUARD_REWARD, *IMAGE_STATS, *MODEL_METRICS, *metric_configs, *extra_rewards, *extra_names}
    if name in known:
        configured = metric_configs.get(name) if metric_configs else None
        if configured is not None and configured.name in EXTERNAL_METRICS:
            return (f"train.guard.metrics names {name!r}, an external metric ({configured.name}) that runs outside "
                    "this process: the guard scores in-process; choose an in-process metric "
                    f"({', '.join(MODEL_METRICS)})")
        return None
    if name in EXTERNAL_METRICS:
        return (f"train.guard.metrics names {name!r}, which runs outside this process: the guard scores in-process; "
                f"choose one of {', '.join(MODEL_METRICS)}")
    if name.startswith(GUARD_WORLD_PREFIX):
        return (f"train.guard.metrics names {name!r}, a shapes-world grader metric, but no world metrics were "
                "built: use the world pipeline (srpo.world.guard_metrics) or remove it")
    return (f"train.guard.metrics has the unknown metric {name!r}: choose from {GUARD_REWARD}, "
            f"{', '.join(IMAGE_STATS)}, {', '.join(MODEL_METRICS)}, world.<key> on the shapes world, or a name of "
            "the pipeline's metrics / extra_rewards")


def check_guard_metrics(guard: GuardConfig, metric_configs: Mapping[str, MetricConfig] = (),
                        extra_rewards: Mapping[str, RewardConfig] = (), extra_names=()) -> None:
    """Raise for the first guard metric that cannot be built (before any step runs)."""
    for name in guard.metrics:
        error = guard_metric_error(name, metric_configs, extra_rewards, extra_names)
        if error:
            raise ValueError(error)


def build_guard_metrics(guard: GuardConfig, *, reward=None, metric_configs: Optional[Mapping[str, MetricConfig]] = None,
                        extra_rewards: Optional[Mapping[str, RewardConfig]] = None,
                        extra: Optional[Mapping[str, MetricFn]] = None, extra_names=(),
                        device: str = "cpu") -> dict[str, MetricFn]:
    """``{key: MetricFn}`` producing every name of ``guard.metrics``.

    ``reward``: the training's loaded :class:`~srpo.rewards.base.RewardModel` (for ``reward``);
    ``extra``: functions built elsewhere (the world's), and ``extra_names`` the names they produce.
    """
    from srpo.evaluation.metrics import load_metric
    from srpo.evaluation.metrics.clip_metrics import RewardScoreMetric
    from srpo.rewards import load_reward

    metric_configs = {k: v if isinstance(v, MetricConfig) else MetricConfig(**v) for k, v in (metric_configs or {}).items()}
    extra_rewards = {k: v if isinstance(v, RewardConfig) else RewardConfig(**v) for k, v in (extra_rewards or {}).items()}
    check_guard_metrics(guard, metric_configs, extra_rewards, extra_names)
    out: dict[str, MetricFn] = dict(extra or {})
    stats = [n for n in guard.metrics if n in IMAGE_STATS]
    if stats:
        out[STATS_KEY] = lambda images, prompts: image_statistics(images, stats)
    for name in guard.metrics:
        if name in IMAGE_STATS or name in extra_names:
            continue
        if name == GUARD_REWARD:
            if reward is None:
                raise ValueError("train.guard.metrics names 'reward' but no training reward model was given to the "
                                 "guard: pass the trainer's reward, or remove 'reward'")
            out[name] = RewardScoreMetric(name, reward).score_batched
        elif name in extra_rewards:
            out[name] = RewardScoreMetric(name, load_reward(extra_rewards[name], device=device)).score_batched
        else:
            out[name] = load_metric(metric_configs.get(name) or MetricConfig(name=name), device=device).score_batched
    return out
