"""Validate a run configuration before ZenML sees it: ``python -m pipelines.validate configs/x.yaml``.

ZenML ignores unknown top-level keys and only warns about a misspelled step name, so a typo can
silently drop settings. This check reads the pipeline from the config's header line
(``zenml pipeline run pipelines.<module>.<pipeline> --config ...``) and rejects:

- unknown top-level keys and unknown keys inside a step's section;
- step names the pipeline does not have;
- pipeline parameters that are unknown or fail their pydantic model.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

_HEADER = re.compile(r"zenml pipeline run (pipelines\.[\w.]+)")


class RunConfigError(ValueError):
    """A run configuration that would not do what it says."""


def pipeline_source(config_path: Path) -> str:
    """The ``pipelines.<module>.<name>`` that the config's header says it runs."""
    for line in config_path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if match := _HEADER.search(line):
            return match.group(1)
    raise RunConfigError(f"{config_path}: the header must name its command, e.g. "
                         "'#   zenml pipeline run pipelines.training.srpo_training --config <this file>'")


def load_pipeline(source: str):
    module, _, name = source.rpartition(".")
    return getattr(importlib.import_module(module), name)


def step_names(pipeline, parameters: dict[str, Any]) -> set[str]:
    """The step invocation names the pipeline creates with these parameters."""
    pipeline.prepare(**parameters)
    return set(pipeline.invocations)


def validate_parameters(pipeline, parameters: dict[str, Any]) -> dict[str, Any]:
    """Check pipeline parameters against the pipeline function's signature and types."""
    signature = inspect.signature(pipeline.entrypoint)
    unknown = sorted(set(parameters) - set(signature.parameters))
    if unknown:
        raise RunConfigError(f"unknown pipeline parameter(s) {unknown}: known are {sorted(signature.parameters)}")
    missing = [n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty and n not in parameters]
    if missing:
        raise RunConfigError(f"missing required pipeline parameter(s) {missing}")
    checked = {}
    for name, value in parameters.items():
        try:
            checked[name] = TypeAdapter(signature.parameters[name].annotation).validate_python(value)
        except ValidationError as err:
            raise RunConfigError(f"parameters.{name}: {err}") from err
    return checked


def validate_run_config(config_path: str | Path) -> dict[str, Any]:
    """Validate ``config_path`` fully; returns the parsed YAML. Raises :class:`RunConfigError`."""
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration
    from zenml.config.step_configurations import StepConfigurationUpdate

    config_path = Path(config_path)
    raw = yaml.safe_load(config_path.read_text()) or {}
    unknown = sorted(set(raw) - set(PipelineRunConfiguration.model_fields))
    if unknown:
        raise RunConfigError(f"{config_path}: unknown top-level key(s) {unknown}")
    try:
        PipelineRunConfiguration.model_validate(raw)
    except ValidationError as err:
        raise RunConfigError(f"{config_path}: {err}") from err
    pipeline = load_pipeline(pipeline_source(config_path))
    params = validate_parameters(pipeline, raw.get("parameters") or {})
    steps = raw.get("steps") or {}
    if steps:
        known = step_names(pipeline, params)
        for name, section in steps.items():
            if name not in known:
                raise RunConfigError(f"{config_path}: steps.{name} is not a step of {pipeline.name} "
                                     f"(its steps: {sorted(known)})")
            bad = sorted(set(section or {}) - set(StepConfigurationUpdate.model_fields))
            if bad:
                raise RunConfigError(f"{config_path}: unknown key(s) {bad} in steps.{name}")
    return raw


if __name__ == "__main__":
    status = 0
    for arg in sys.argv[1:]:
        try:
            validate_run_config(arg)
            print(f"ok    {arg}")
        except (RunConfigError, FileNotFoundError) as err:
            print(f"error {err}")
            status = 1
    sys.exit(status)
