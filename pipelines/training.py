"""``srpo_training``: prompts -> rollouts -> SRPO training -> evaluation -> human-eval export.

An edit run (``rollouts.edits``) is evaluated on held-out edits instead (``evaluation.edits``,
``steps/evaluate_edits.py``): base and tuned edit the same held-out sources; the edits are scored per
reward term and, for the shapes world, graded from pixels (done / kept).

    zenml pipeline run pipelines.training.srpo_training --config configs/tiny_cpu.yaml

Every run carries a version of a ZenML Model (Model Control Plane): ``srpo`` unless the config's
``model:`` section names another; the tuned transformer is its MODEL artifact and the evaluation
numbers are its metadata. With ``promotion:`` the version then becomes ``production``, ``staging`` or
nothing by the declared rule (``steps/promote_model.py``); with ``export:`` its files are written in the
layouts other tools load (``steps/export_model.py``; docs/export.md). Before anything runs, the active stack's artifact store is checked
(``ops/preflight.py``), so a down S3 endpoint or wrong keys fail at once with the fix.
"""

from typing import Optional

from zenml import Model

from ops.pipeline import pipeline
from ops.preflight import check_artifact_store

from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.evaluation.config import (EvalConfig, EvalReportConfig, HumanEvalConfig, MetricConfig, check_evaluation_plan,
                                    check_metric_config)
from srpo.evaluation.edits import check_edit_evaluation
from srpo.evaluation.guard_metrics import check_guard_metrics
from srpo.evaluation.promotion import PromotionConfig, check_promotion
from srpo.export.writer import ExportConfig
from srpo.prompts import PromptConfig
from srpo.rewards import RewardConfig
from srpo.rewards.config import MultiRewardConfig
from srpo.training.job import TrainingJob
from srpo.world.guard_metrics import world_metric_names
from srpo.world.report import WorldReportConfig, steering_from_words
from steps import (evaluate, evaluate_edits, export_human_eval, export_model, generate_rollouts, prepare_prompts,
                   promote_model, train_srpo, world_report)


@pipeline(model=Model(name="srpo", description="Transformers tuned with SRPO / Direct-Align", tags=["srpo"]))
def srpo_training(
    prompts: PromptConfig,
    reward: RewardConfig,
    policy: PolicyConfig = PolicyConfig(),
    rollouts: RolloutConfig = RolloutConfig(),
    train: TrainConfig = TrainConfig(),
    evaluation: EvalConfig = EvalConfig(),
    extra_rewards: Optional[dict[str, RewardConfig]] = None,
    metrics: Optional[dict[str, MetricConfig]] = None,
    report: EvalReportConfig = EvalReportConfig(),
    human_eval: HumanEvalConfig = HumanEvalConfig(),
    world: Optional[WorldReportConfig] = None,
    rewards: Optional[MultiRewardConfig] = None,
    promotion: Optional[PromotionConfig] = None,
    export: Optional[ExportConfig] = None,
) -> None:
    check_artifact_store()
    # the run's one validation (srpo.training.job): the step repeats it with the rollout count and the device
    TrainingJob(policy=policy, reward=reward, rollout=rollouts, train=train, rewards=rewards,
                metric_configs={k: v.model_dump(mode="json") for k, v in (metrics or {}).items()},
                extra_rewards=extra_rewards or {}).validate_run()
    if reward.metric is not None:  # an evaluation metric as a score-only reward: its config, checked here
        check_metric_config(reward.metric, "reward.metric")
    if train.guard is not None:
        check_guard_metrics(train.guard, metrics or {}, extra_rewards or {}, world_metric_names(train.guard))
    check_evaluation_plan(["base", "tuned"], report, human_eval, style_prompts=False, metrics=metrics)
    check_edit_evaluation(evaluation, rollouts.edits)  # an edit run is evaluated on held-out edits
    if promotion is not None:  # before anything runs: a rule on a metric nobody scores would fail after training
        check_promotion(promotion, {"reward", *(metrics or {}), *(extra_rewards or {})})
    if world is not None:
        steering_from_words(train.positive_words)  # the world report needs a world attribute word
    train_prompts, heldout_prompts = prepare_prompts(config=prompts)
    rollout_set = generate_rollouts(train_prompts=train_prompts, policy=policy, rollouts=rollouts)
    tuned, _ = train_srpo(rollouts=rollout_set, policy=policy, reward=reward, rollout=rollouts, train=train,
                          heldout_prompts=heldout_prompts, metrics=metrics, extra_rewards=extra_rewards,
                          rewards=rewards)
    if rollouts.edits:  # held-out (source, instruction) pairs edited by base and tuned (steps/evaluate_edits.py)
        results_summary, results, _ = evaluate_edits(policy=policy, evaluation=evaluation, tuned=tuned, reward=reward,
                                                     extra_rewards=extra_rewards, rewards=rewards, metrics=metrics,
                                                     report=report, train_edits=rollouts.edits)
    else:
        results_summary, results = evaluate(heldout_prompts=heldout_prompts, tuned=tuned, policy=policy, reward=reward,
                                            evaluation=evaluation, extra_rewards=extra_rewards, metrics=metrics,
                                            report=report)
    if human_eval.enabled:
        export_human_eval(results=results, config=human_eval)
    if world is not None:  # shapes world: before/after table, grids and curves (configs/shapes_demo.yaml)
        world_report(tuned=tuned, policy=policy, reward=reward, train=train, world=world)
    stage = None
    if promotion is not None:  # production / staging / nothing for this run's Model version (steps/promote_model.py)
        stage = promote_model(evaluation=results_summary, tuned=tuned, promotion=promotion, policy=policy,
                              eval_config=evaluation, metrics=metrics)
    if export is not None:  # diffusers / single-file / ComfyUI / kohya files and a model card (steps/export_model.py)
        export_model(tuned=tuned, policy=policy, train=train, export=export, evaluation=results_summary,
                     promotion_stage=stage)
