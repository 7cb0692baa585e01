"""Print the result of a pipeline's latest run: ``python -m ops.summary srpo_training``."""

from __future__ import annotations

import argparse

DEFAULT_PIPELINE = "srpo_training"


def evaluation_lines(result: dict) -> list[str]:
    """The ``evaluation`` artifact as a table: one row per metric, one column per model, then the delta.

    The delta column shows "-" where there is no delta (a single model, or no baseline to compare with).
    """
    means, deltas = result["means"], result.get("deltas") or {}
    metrics = sorted(next(iter(means.values()), {}))
    lines = [f"held-out prompts: {len(result['prompts'])}",
             f"{'metric':<12}" + "".join(f"{m:>12}" for m in means) + f"{'delta':>12}"]
    for metric in metrics:
        row = "".join(f"{means[m][metric]:>12.4f}" for m in means)
        delta = deltas.get(f"delta_{metric}")
        lines.append(f"{metric:<12}{row}" + (f"{delta:>+12.4f}" if delta is not None else f"{'-':>12}"))
    return lines


def latest_run(pipeline_name: str):
    """The pipeline's latest run; :class:`LookupError` naming the pipelines this ZenML store has, or
    saying that the pipeline never ran."""
    from zenml.client import Client

    client = Client()
    try:
        pipeline = client.get_pipeline(pipeline_name)
    except KeyError:
        known = sorted(p.name for p in client.list_pipelines(size=1000).items)
        raise LookupError(f"no pipeline named {pipeline_name!r} in this ZenML store: it has {known or 'none'} "
                          f"(`zenml pipeline list` lists them)") from None
    try:
        return pipeline.last_run
    except RuntimeError:
        raise LookupError(f"pipeline {pipeline_name!r} has no runs yet: run it first") from None


def latest_run_summary(pipeline_name: str) -> str:
    run = latest_run(pipeline_name)
    lines = [f"run {run.name}: {run.status}"]
    train_step = run.steps.get("train_srpo")
    if train_step is not None:
        curve = train_step.run_metadata.get("reward_curve")
        if curve:
            lines.append(f"train reward: first {curve[0]:+.4f}  last {curve[-1]:+.4f}  ({len(curve)} updates)")
    evaluation = run.steps.get("evaluate")
    if evaluation is not None:
        lines += evaluation_lines(evaluation.outputs["evaluation"][0].load())
    checks = run.steps.get("check_world")
    if checks is not None:  # shapes_bootstrap: the world's models against the bootstrap targets
        report = checks.outputs["world_checks"][0].load()
        rew, gen = report["reward"], report["generator"]
        lines.append(f"reward ranks the true attribute word above its opposite: {100 * rew['attribute_words']:.1f}% "
                     f"of held-out images (target {100 * report['targets']['reward_attribute_words']:.0f}%)")
        lines.append(f"generator samples with both colours right: {100 * gen['colours']:.1f}% of "
                     f"{gen['num_samples']} (target {100 * report['targets']['generator_colours']:.0f}%); "
                     f"foreground {100 * gen['fidelity']['fg']:.1f}%, background {100 * gen['fidelity']['bg']:.1f}%")
        lines.append(f"targets {'reached' if report['passed'] else 'NOT reached'}")
    world = run.steps.get("world_report")
    if world is not None:  # shapes world: the steered attribute, fidelity and reward before/after
        lines.append("")
        lines.append(world.outputs["world_report"][0].load()["table"])
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.summary", description=__doc__.split("\n")[0])
    parser.add_argument("pipeline", nargs="?", default=DEFAULT_PIPELINE,
                        help=f"the pipeline's name, e.g. shapes_bootstrap (default: {DEFAULT_PIPELINE})")
    args = parser.parse_args(argv)
    try:
        print(latest_run_summary(args.pipeline))
    except LookupError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":
    main()
