"""``@pipeline`` for every pipeline in ``pipelines/``: ZenML's decorator, with two run-config checks ZenML lacks.

ZenML 0.98 lets two kinds of bad run config through ``zenml pipeline run --config``:

- a ``steps:`` name that is no step of the pipeline: its compiler logs "Configuration for step
  invocations {...} cannot be applied" and drops the section, so the run goes on without those
  settings. Here the run fails when the pipeline body has run (the step invocations exist, no step
  has started), naming the misspelled step and the valid ones (:func:`ops.validate.check_step_names`,
  the same check ``python -m ops.validate`` makes);
- a pipeline parameter that fails its pydantic model: ZenML replaces the error with "Only JSON
  serializable inputs are allowed as pipeline inputs". Here the error's first line is the field,
  the value given and what to do (:func:`ops.validate.parameter_errors`).

Both checks sit in the two hooks ZenML's ``Pipeline.prepare`` calls (the parameters' validation and
the body's invocation), so they hold for the CLI and for ``pipeline.with_options(config_path=...)()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from pydantic import ValidationError
from zenml import pipeline as zenml_pipeline
from zenml.pipelines.pipeline_definition import Pipeline

from ops.validate import RunConfigError, check_step_names, parameter_errors


class CheckedPipeline(Pipeline):
    """A ZenML ``Pipeline`` that refuses misspelled ``steps:`` names and reports parameter errors by field."""

    def _validate_entrypoint_args(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super()._validate_entrypoint_args(*args, **kwargs)
        except ValueError as err:
            if isinstance(err.__cause__, ValidationError):
                raise RunConfigError(f"{self._config_named()}: {parameter_errors(err.__cause__)}") from None
            raise

    def _prepare_invocations(self, **kwargs: Any) -> None:
        super()._prepare_invocations(**kwargs)
        configured = configured_step_names(self._run_args)
        if configured:
            try:
                check_step_names(self.name, configured, self.invocations)
            except RunConfigError as err:
                raise RunConfigError(f"{self._config_named()}: {err}") from None

    def _config_named(self) -> str:
        """Where the run's configuration comes from: its config file, else the pipeline's name."""
        return str(self._run_args.get("config_path") or self.name)


def configured_step_names(run_args: dict[str, Any]) -> set[str]:
    """The step names a run configures: ``steps:`` of its config file and ``with_options(steps=...)``."""
    names = set(run_args.get("step_configurations") or {})
    config_path = run_args.get("config_path")
    if config_path:
        raw = yaml.safe_load(Path(config_path).read_text()) or {}
        names |= set((raw.get("steps") or {}) if isinstance(raw, dict) else {})
    return names


def pipeline(_func: Optional[Callable[..., Any]] = None, **options: Any) -> Any:
    """``zenml.pipeline`` with the same options, making a :class:`CheckedPipeline`."""

    def decorate(func: Callable[..., Any]) -> CheckedPipeline:
        made = zenml_pipeline(**options)(func)
        if type(made) is not Pipeline:  # e.g. dynamic=True: another class, whose hooks these are not
            raise TypeError(f"{func.__name__}: ops.pipeline checks static pipelines only, got {type(made).__name__}")
        made.__class__ = CheckedPipeline  # the same object, with the two checks' hooks
        return made

    return decorate(_func) if _func is not None else decorate
