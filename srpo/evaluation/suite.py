"""One call from configs to results: what the ``evaluate`` step of both pipelines runs.

:func:`evaluate_suite` builds the models to compare (the policy as ``base``, a tuned
transformer as ``tuned``, and/or explicit :class:`~srpo.evaluation.config.ModelSpec` entries),
the metrics (the training reward and extra rewards under their names, plus configured
metrics), runs :func:`srpo.evaluation.runner.run_evaluation` and returns the
:class:`~srpo.evaluation.artifacts.EvalResults` together with a small JSON summary (the
``evaluation`` artifact that ``srpo_training`` has always produced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from srpo.config import PolicyConfig
from srpo.evaluation.artifacts import EvalResults
from srpo.evaluation.benchmarks import Benchmark
from srpo.evaluation.config import EvalConfig, EvalReportConfig, MetricConfig, ModelSpec
from srpo.evaluation.metrics import Metric, load_metric
from srpo.evaluation.results import OVERALL, overall_means
from srpo.rewards import RewardConfig


def build_models(policy: PolicyConfig, tuned: Optional[str] = None,
                 models: Optional[Mapping[str, ModelSpec]] = None) -> dict[str, Callable]:
    """``{name: loader}``: ``models`` if given (else ``base`` = the policy), plus ``tuned`` when given."""
    from srpo.models.families import inference_config, load_policy

    specs = {k: ModelSpec.model_validate(v) for k, v in models.items()} if models else {"base": ModelSpec()}
    if tuned is not None:
        if "tuned" in specs:
            raise ValueError("a tuned transformer is given and `models` already has an entry 'tuned': rename it")
        specs["tuned"] = ModelSpec(transformer=tuned)
    loaders = {}
    for name, spec in specs.items():
        cfg = policy.model_copy(update={"pretrained": spec.pretrained or policy.pretrained,
                                        "transformer": spec.transformer or policy.transformer})
        loaders[name] = (lambda c=cfg: load_policy(inference_config(c)))
    return loaders


def build_metrics(reward: Optional[RewardConfig] = None, extra_rewards: Optional[Mapping[str, RewardConfig]] = None,
                  metrics: Optional[Mapping[str, MetricConfig]] = None, device: str = "cpu") -> dict[str, Metric]:
    """The training reward as ``reward``, extra rewards and configured metrics under their names."""
    from srpo.evaluation.metrics.clip_metrics import RewardScoreMetric
    from srpo.rewards import load_reward

    out: dict[str, Metric] = {}
    if reward is not None and "reward" in (extra_rewards or {}):
        raise ValueError("extra_rewards has an entry 'reward', the name of the training reward's score: rename it")
    rewards = {**({"reward": reward} if reward is not None else {}), **(extra_rewards or {})}
    for name, cfg in rewards.items():
        out[name] = RewardScoreMetric(name, load_reward(cfg, device=device))
    for name, cfg in (metrics or {}).items():
        if name in out:
            raise ValueError(f"metric name {name!r} is used twice (rewards and metrics): rename one")
        out[name] = load_metric(cfg, device=device)
    if not out:
        raise ValueError("nothing to score with: give a reward or at least one metric")
    return out


def summary_dict(results: EvalResults, baseline: str = "base") -> dict:
    """The compact ``evaluation`` artifact: prompts, per-prompt scores, means, deltas, summary rows."""
    data = results.read_json()
    means = overall_means(data["summary"])
    deltas = {}
    others = [m for m in data["models"] if m != baseline]
    if baseline in means and others:
        target = "tuned" if "tuned" in others else others[0]
        rows = [r for r in data["deltas"] if r["model"] == target]
        has_overall = any(r["category"] == OVERALL for r in rows)
        for r in rows:
            if (r["category"] == OVERALL) if has_overall else True:
                deltas.setdefault(f"delta_{r['metric']}", r["delta"])
    return {"prompts": [it["prompt"] for it in data["items"]], "categories": [it["category"] for it in data["items"]],
            "means": means, "per_prompt": data["scores"], "deltas": deltas, "summary": data["summary"],
            "delta_rows": data["deltas"]}


def evaluate_suite(prompts: Sequence[str], out_dir: Path, *, policy: PolicyConfig, evaluation: EvalConfig,
                   report: EvalReportConfig = EvalReportConfig(), categories: Optional[Sequence[str]] = None,
                   tuned: Optional[str] = None, models: Optional[Mapping[str, ModelSpec]] = None,
                   reward: Optional[RewardConfig] = None, extra_rewards: Optional[Mapping[str, RewardConfig]] = None,
                   metrics: Optional[Mapping[str, MetricConfig]] = None, benchmark_name: str = "prompts",
                   indices: Optional[Sequence[int]] = None, records: Optional[Sequence[Optional[dict]]] = None
                   ) -> tuple[dict, EvalResults]:
    """Generate, score and summarise; returns ``(summary_dict, EvalResults)``.

    ``indices``: each prompt's index in the full benchmark (fixes its seed; default
    ``0..N-1``); ``records``: each prompt's benchmark record (GenEval's specs) or ``None``.
    """
    from srpo.evaluation.runner import run_evaluation
    from srpo.models.families import resolve_device
    from srpo.training.fit import check_inference_fits

    prompts = list(prompts)
    categories = list(categories) if categories is not None else ["all"] * len(prompts)
    if len(categories) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(categories)} categories: give one category per prompt")
    bench = Benchmark(prompts, categories, name=benchmark_name, indices=indices, records=records)
    check_inference_fits(policy, resolve_device(policy.device), batch=report.batch_size, num_samples=report.batch_size,
                         decode_batch=report.batch_size, step="evaluation",  # before any weight loads
                         scorers=[c for c in (reward, *(extra_rewards or {}).values(), *(metrics or {}).values()) if c])
    loaders = build_models(policy, tuned, models)
    scorers = build_metrics(reward, extra_rewards, metrics, device=str(resolve_device(policy.device)))
    results = run_evaluation(loaders, bench, scorers, evaluation, report, policy.height, policy.width, Path(out_dir))
    return summary_dict(results, report.baseline), results
