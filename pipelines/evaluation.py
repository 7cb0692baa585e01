"""``srpo_evaluation``: benchmark -> word frequencies; generate + score every model -> human-eval export.

    zenml pipeline run pipelines.evaluation.srpo_evaluation --config configs/eval_tiny_cpu.yaml

Edit models: no benchmark, ``evaluation.edits`` instead (held-out (source, instruction) pairs); every
model edits them, scored by the metrics against each pair's target text, by ``rewards:`` per term and,
with ``grader: shapes``, from pixels (``steps/evaluate_edits.py``).

The ``evaluate`` step is the same step ``srpo_training`` ends with (one implementation,
:func:`srpo.evaluation.suite.evaluate_suite`); here it gets a benchmark's prompts, categories,
indices (each prompt's seed) and records (GenEval's specs), the models to compare and the metrics.
"""

from typing import Optional

from ops.pipeline import pipeline

from srpo.config import PolicyConfig
from srpo.evaluation.benchmarks import benchmark_format
from srpo.evaluation.config import (BenchmarkConfig, EvalConfig, EvalReportConfig, HumanEvalConfig, MetricConfig,
                                    ModelSpec, PromptAnalysisConfig, check_evaluation_plan)
from srpo.evaluation.edits import check_edit_benchmark
from srpo.rewards.config import MultiRewardConfig
from steps import analyze_prompts, evaluate, evaluate_edits, export_human_eval, load_benchmark


@pipeline
def srpo_evaluation(
    benchmark: Optional[BenchmarkConfig] = None,
    metrics: Optional[dict[str, MetricConfig]] = None,
    policy: PolicyConfig = PolicyConfig(),
    models: Optional[dict[str, ModelSpec]] = None,
    evaluation: EvalConfig = EvalConfig(),
    report: EvalReportConfig = EvalReportConfig(),
    human_eval: HumanEvalConfig = HumanEvalConfig(),
    analysis: PromptAnalysisConfig = PromptAnalysisConfig(),
    rewards: Optional[MultiRewardConfig] = None,
) -> None:
    check_edit_benchmark(benchmark is not None, evaluation, metrics, rewards)
    check_evaluation_plan(list(models) if models else ["base"], report, human_eval,
                          style_prompts=benchmark is not None and benchmark.style_variants is not None,
                          metrics=metrics,
                          geneval_specs=benchmark is not None and benchmark_format(benchmark) == "geneval")
    if benchmark is None:  # an edit model on held-out edits (evaluation.edits)
        _, results, _ = evaluate_edits(policy=policy, evaluation=evaluation, models=models, rewards=rewards,
                                       metrics=metrics, report=report)
    else:
        prompts, categories, indices, records = load_benchmark(config=benchmark)
        analyze_prompts(prompts=prompts, categories=categories, config=analysis)
        _, results = evaluate(heldout_prompts=prompts, categories=categories, indices=indices, records=records,
                              policy=policy, evaluation=evaluation, models=models, metrics=metrics, report=report)
    if human_eval.enabled:
        export_human_eval(results=results, config=human_eval)
