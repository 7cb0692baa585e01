"""Generate with every model and score with every metric: the evaluation of both pipelines.

``srpo_training`` passes its held-out prompts, the tuned transformer and its reward(s);
``srpo_evaluation`` passes a benchmark's prompts, categories, indices (seeds) and records, the models
and the metrics.
Both run :func:`srpo.evaluation.suite.evaluate_suite`.
"""

from typing import Annotated, Optional, Tuple

from zenml import get_step_context, log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.config import PolicyConfig
from srpo.evaluation.artifacts import EvalResults
from srpo.evaluation.config import EvalConfig, EvalReportConfig, MetricConfig, ModelSpec
from srpo.evaluation.suite import evaluate_suite
from srpo.rewards import RewardConfig
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def evaluate(
    heldout_prompts: list[str],
    policy: PolicyConfig,
    evaluation: EvalConfig,
    tuned: Optional[ModelFolder] = None,
    reward: Optional[RewardConfig] = None,
    extra_rewards: Optional[dict[str, RewardConfig]] = None,
    categories: Optional[list[str]] = None,
    models: Optional[dict[str, ModelSpec]] = None,
    metrics: Optional[dict[str, MetricConfig]] = None,
    report: EvalReportConfig = EvalReportConfig(),
    indices: Optional[list[int]] = None,
    records: Optional[list[Optional[dict]]] = None,
) -> Tuple[Annotated[dict, "evaluation"], Annotated[EvalResults, "evaluation_results"]]:
    """Mean score per model and metric (``evaluation``) and the full results with images and CIs.

    ``indices`` / ``records``: the benchmark index (seed) and record (GenEval's specs) of each prompt.
    """
    library_logging()
    summary, results = evaluate_suite(
        heldout_prompts, scratch_dir("srpo-eval-") / "results", policy=policy,
        evaluation=evaluation, report=report, categories=categories,
        tuned=str(tuned.path) if tuned is not None else None, models=models, reward=reward,
        extra_rewards=extra_rewards, metrics=metrics, indices=indices, records=records)
    log_metadata(metadata={"means": summary["means"], **summary["deltas"], "num_prompts": len(summary["prompts"])})
    if get_step_context().model_version is not None:  # the run's Model version (lineage) gets the numbers too
        log_metadata(metadata={"evaluation_means": summary["means"], **summary["deltas"],
                               "num_prompts": len(summary["prompts"])}, infer_model=True)
    return summary, results
