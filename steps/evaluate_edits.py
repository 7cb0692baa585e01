"""Edit held-out (source, instruction) pairs with every model and score the edits: an edit run's evaluation.

The ``evaluate`` step's counterpart for edit families (:func:`srpo.evaluation.edits.evaluate_edit_suite`):
the same ``evaluation`` summary and ``evaluation_results`` (so promotion, export and the human-eval pages
follow unchanged), plus the ``edit_report`` (the shapes grader's done / kept shares per model and attribute).
"""

from typing import Annotated, Optional, Tuple

from zenml import get_step_context, log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.config import PolicyConfig
from srpo.evaluation.artifacts import EvalResults
from srpo.evaluation.config import EvalConfig, EvalReportConfig, MetricConfig, ModelSpec
from srpo.evaluation.edits import evaluate_edit_suite
from srpo.rewards import RewardConfig
from srpo.rewards.config import MultiRewardConfig
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def evaluate_edits(
    policy: PolicyConfig,
    evaluation: EvalConfig,
    tuned: Optional[ModelFolder] = None,
    reward: Optional[RewardConfig] = None,
    extra_rewards: Optional[dict[str, RewardConfig]] = None,
    rewards: Optional[MultiRewardConfig] = None,
    models: Optional[dict[str, ModelSpec]] = None,
    metrics: Optional[dict[str, MetricConfig]] = None,
    report: EvalReportConfig = EvalReportConfig(),
    train_edits: Optional[str] = None,
) -> Tuple[Annotated[dict, "evaluation"], Annotated[EvalResults, "evaluation_results"], Annotated[dict, "edit_report"]]:
    """Mean score per model and metric, the full results with the edits and their sources, and the edit report.

    ``train_edits``: the folder training edited (``rollouts.edits``); no held-out pair may repeat one of it.
    """
    library_logging()
    summary, results, edit_report = evaluate_edit_suite(
        scratch_dir("srpo-eval-") / "results", policy=policy, evaluation=evaluation, report=report,
        tuned=str(tuned.path) if tuned is not None else None, models=models, reward=reward,
        extra_rewards=extra_rewards, rewards=rewards, metrics=metrics, train_edits=train_edits)
    shares = {f"{k}_{name}": v[k] for name, v in edit_report.get("models", {}).items() for k in ("done", "kept")}
    metadata = {"means": summary["means"], **summary["deltas"], "num_edits": len(summary["prompts"]), **shares}
    log_metadata(metadata=metadata)
    if get_step_context().model_version is not None:  # the run's Model version gets the numbers too
        log_metadata(metadata={"evaluation_means": summary["means"], **summary["deltas"],
                               "num_edits": len(summary["prompts"]), **shares}, infer_model=True)
    return summary, results, edit_report
