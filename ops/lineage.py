"""Trace a tuned model back to its prompts, rollouts and config: ``python -m ops.lineage MODEL [VERSION]``.

Starts from the ``tuned_transformer`` MODEL artifact of a ZenML Model version (the latest one
unless VERSION, a number or name, is given) and walks back through the steps that produced each
input: ``train_srpo`` <- ``generate_rollouts`` <- ``prepare_prompts``, printing every step's
parameters (the run's config) and every artifact's name, version and URI. Cached steps are
followed to the run that really produced their outputs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any, Optional
from uuid import UUID

TUNED_ARTIFACT = "tuned_transformer"


@dataclass
class StepTrace:
    """One producing step: its run, parameters, and the artifacts it read (name -> artifact line)."""

    step: str
    run: str
    parameters: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class Lineage:
    """A model version's tuned weights and the chain of steps behind them, newest first."""

    model: str
    version: str
    tags: list[str]
    metadata: dict[str, Any]
    tuned: str
    steps: list[StepTrace]

    def step(self, name: str) -> StepTrace:
        return next(s for s in self.steps if s.step == name)

    def format(self) -> str:
        lines = [f"model {self.model} version {self.version}  tags {self.tags}",
                 f"  metadata {json.dumps(self.metadata, default=str, sort_keys=True)}",
                 f"  {TUNED_ARTIFACT}: {self.tuned}"]
        for s in self.steps:
            lines.append(f"step {s.step} (run {s.run})")
            for name, artifact in s.inputs.items():
                lines.append(f"  input  {name}: {artifact}")
            for name, value in s.parameters.items():
                lines.append(f"  param  {name}: {json.dumps(value, default=str, sort_keys=True)}")
        return "\n".join(lines)


def _describe(artifact) -> str:
    return f"{artifact.name} v{artifact.version} at {artifact.uri}"


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def trace(model: str, version: Optional[str] = None, client=None) -> Lineage:
    """The lineage of ``model``'s ``version`` (default: latest)."""
    from zenml.client import Client
    from zenml.enums import ModelStages

    client = client or Client()
    try:
        model_version = client.get_model_version(model, version if version is not None else ModelStages.LATEST)
    except KeyError:
        known = sorted(m.name for m in client.list_models(size=1000).items)
        if model not in known:
            raise LookupError(f"no model named {model!r} in this ZenML store: it has {known or 'none'} "
                              "(`zenml model list` lists them)") from None
        raise LookupError(f"model {model!r} has no version {version!r}: `zenml model version list {model}` "
                          "lists its versions") from None
    tuned = model_version.get_model_artifact(TUNED_ARTIFACT)
    if tuned is None:
        raise LookupError(f"model {model} version {model_version.name} has no {TUNED_ARTIFACT!r} MODEL artifact "
                          "(did its run finish train_srpo?)")
    steps: list[StepTrace] = []
    seen: set[UUID] = set()
    frontier = [tuned.producer_step_run_id]
    while frontier:
        step_id = frontier.pop(0)
        if step_id is None or step_id in seen:
            continue
        seen.add(step_id)
        step = client.get_run_step(step_id)
        run = client.get_pipeline_run(step.pipeline_run_id)
        entry = StepTrace(step=step.name, run=run.name,
                          parameters={k: _plain(v) for k, v in (step.config.parameters or {}).items()})
        for name, artifacts in step.inputs.items():
            for artifact in artifacts if isinstance(artifacts, list) else [artifacts]:
                entry.inputs[name] = _describe(artifact)
                frontier.append(artifact.producer_step_run_id)
        steps.append(entry)
    return Lineage(model=model, version=str(model_version.name), tags=sorted(t.name for t in model_version.tags),
                   metadata=dict(model_version.run_metadata or {}), tuned=_describe(tuned), steps=steps)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.lineage", description=__doc__.split("\n")[0])
    parser.add_argument("model", metavar="MODEL", help="a ZenML Model's name, e.g. srpo-tiny-cpu")
    parser.add_argument("version", metavar="VERSION", nargs="?", default=None,
                        help="a version number or name (default: the latest version)")
    args = parser.parse_args(argv)
    try:
        print(trace(args.model, args.version).format())
    except LookupError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":
    main()
