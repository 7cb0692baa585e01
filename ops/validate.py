"""Validate a run configuration before ZenML sees it: ``python -m ops.validate configs/x.yaml``.

ZenML ignores unknown top-level keys, only warns about a misspelled step name and drops
misspelled settings attributes with a warning, so a typo can silently drop settings. This check
reads the pipeline from the config's header line
(``zenml pipeline run pipelines.<module>.<pipeline> --config ...``) and rejects:

- unknown top-level keys and unknown keys inside a step's section;
- step names the pipeline does not have, and step parameters the step function does not take;
- pipeline parameters that are unknown or fail their pydantic model, or that the pipeline's body
  refuses together (e.g. ``report.baseline`` not among the evaluated models);
- settings keys that name no settings class, and attributes (at any depth) or values that the
  key's ZenML settings class does not accept: ``docker`` -> ``DockerSettings``, ``resources`` ->
  ``ResourceSettings``, ``<component type>.<flavor>`` (e.g. ``orchestrator.kubernetes``) -> the
  settings class of that flavor's implementation, as ZenML's own flavor registry lists them.

It never contacts the artifact store or any other stack component: the pipeline is compiled
with the preflight check skipped (:func:`ops.preflight.artifact_store_check_skipped`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from ops.preflight import artifact_store_check_skipped
from srpo.published import is_builtin

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
    raise RunConfigError("the header must name its command, e.g. "
                         "'#   zenml pipeline run pipelines.training.srpo_training --config <this file>'")


def load_pipeline(source: str):
    module, _, name = source.rpartition(".")
    return getattr(importlib.import_module(module), name)


def step_invocations(pipeline, parameters: dict[str, Any]) -> dict[str, Any]:
    """The step invocations (by name) the pipeline creates with these parameters, without running any
    of its checks against the active stack (the artifact store is not contacted)."""
    try:
        with artifact_store_check_skipped():
            pipeline.prepare(**parameters)  # runs the body: its checks of settings that are wrong together
    except ValueError as err:
        raise RunConfigError(str(err)) from err
    return dict(pipeline.invocations)


def validate_step_parameters(invocation, parameters: dict[str, Any], where: str) -> None:
    """Check ``steps.<name>.parameters`` against the step function's signature and against what the
    pipeline passes the step itself (ZenML refuses those at run time as a conflict)."""
    step = invocation.step
    known = inspect.signature(step.entrypoint).parameters
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise RunConfigError(f"{where}: unknown step parameter(s) {unknown}: {step.name} takes {sorted(known)}")
    bound = sorted(set(parameters) & (set(invocation.parameters) | set(invocation.input_artifacts)))
    if bound:
        raise RunConfigError(f"{where}: {bound} {'is' if len(bound) == 1 else 'are'} passed to {step.name} by the "
                             "pipeline itself, so ZenML refuses it here at run time: set it through the pipeline's "
                             "parameters instead")


@functools.cache
def component_flavors() -> dict[str, Any]:
    """ZenML's built-in and integration flavors by settings key ``<component type>.<flavor>``."""
    from zenml.stack.flavor_registry import FlavorRegistry

    registry = FlavorRegistry()
    flavors = (flavor() for flavor in registry.builtin_flavors + registry.integration_flavors)
    return {f"{flavor.type}.{flavor.name}": flavor for flavor in flavors}


def flavor_settings_class(key: str):
    """The settings class of the flavor that ``<component type>.<flavor>`` names (None: it has none)."""
    flavors = component_flavors()
    if key not in flavors:
        component_type = key.partition(".")[0]
        same_type = sorted(k for k in flavors if k.startswith(f"{component_type}."))
        raise RunConfigError(f"settings key '{key}' names no ZenML flavor: {component_type} flavors are {same_type} "
                             f"(a custom flavor cannot be checked here: key it as '{component_type}', which is "
                             "resolved against the stack at run time)")
    try:
        implementation = flavors[key].implementation_class
    except ImportError as err:
        warn(f"settings key '{key}': the flavor's integration is not installed here ({err}), so its attributes "
             "are not checked")
        return None
    # `settings_class` is a property returning a constant; an instance needs a registered component
    return implementation.settings_class.fget(None)


def settings_class(key: str):
    """The ZenML settings class for a ``settings:`` key, resolved without a stack (as ZenML's
    ``SettingsResolver`` does with one): general keys, or ``<component type>.<flavor>``."""
    from zenml.enums import StackComponentType
    from zenml.utils import settings_utils

    general = settings_utils.get_general_settings()
    if key in general:
        return general[key]
    flavor_form = ("'<component type>.<flavor>', e.g. 'orchestrator.kubernetes' or 'step_operator.kubernetes' "
                   f"(component types: {sorted(StackComponentType.values())})")
    if not settings_utils.is_valid_setting_key(key):
        raise RunConfigError(f"settings key '{key}' is not a ZenML settings key: use one of {sorted(general)} "
                             f"or {flavor_form}")
    component_type, dot, flavor = key.partition(".")
    if not (dot and flavor and component_type in StackComponentType.values()):
        warn(f"settings key '{key}' selects the {component_type} of the stack it runs on, so its attributes are not "
             f"checked here; to check them, name the flavor: {flavor_form}")
        return None
    return flavor_settings_class(key)


def warn(message: str) -> None:
    """A check that could not be made (the run may still be right): printed, not raised."""
    print(f"warning: {message}", file=sys.stderr)


def drops_unknown_attributes(cls: type[BaseModel]) -> bool:
    """Whether attributes that ``cls`` does not define are lost: ZenML drops (or never reads) them on
    settings classes, pydantic drops them where extras are ignored. Models that keep extras on purpose
    (e.g. ``DockerBuildOptions``, whose extras become ``docker build`` options) are left alone."""
    from zenml.config.base_settings import BaseSettings

    return issubclass(cls, BaseSettings) or cls.model_config.get("extra") in (None, "ignore")


def attribute_names(cls: type[BaseModel]) -> set[str]:
    """The attribute names ``cls`` accepts: field names and their aliases."""
    names = set(cls.model_fields)
    names |= {f.alias for f in cls.model_fields.values() if f.alias}
    names |= {f.validation_alias for f in cls.model_fields.values() if isinstance(f.validation_alias, str)}
    return names


def unknown_attributes(value: Any, raw: Any, path: str) -> list[str]:
    """One line per model in ``value`` (validated from ``raw``, followed into fields, lists and dicts) whose
    ``raw`` input has attributes that the model does not define and would lose."""
    if isinstance(value, BaseModel) and isinstance(raw, dict):
        cls = type(value)
        unknown = sorted(set(raw) - attribute_names(cls)) if drops_unknown_attributes(cls) else []
        found = [f"{path}: unknown attribute(s) {unknown}; {cls.__name__} has {sorted(cls.model_fields)}"] if unknown else []
        for name, field in cls.model_fields.items():
            key = name if name in raw else field.alias
            if key in raw:
                found += unknown_attributes(getattr(value, name), raw[key], f"{path}.{name}")
        return found
    if isinstance(value, (list, tuple)) and isinstance(raw, (list, tuple)) and len(value) == len(raw):
        return [line for i, (v, r) in enumerate(zip(value, raw)) for line in unknown_attributes(v, r, f"{path}[{i}]")]
    if isinstance(value, dict) and isinstance(raw, dict):
        return [line for k in value if k in raw for line in unknown_attributes(value[k], raw[k], f"{path}.{k}")]
    return []


def validate_settings(settings: dict[str, Any], where: str, level: str) -> None:
    """Check every ``settings:`` key against its ZenML settings class; ``level`` is "PIPELINE" or "STEP"."""
    from zenml.config.base_settings import ConfigurationLevel

    for key, values in (settings or {}).items():
        path = f"{where}.{key}"
        cls = settings_class(key)
        if cls is None:  # resolved against the stack at run time
            continue
        if ConfigurationLevel[level] not in cls.LEVEL:
            raise RunConfigError(f"{path}: {cls.__name__} cannot be set on a {level.lower()}; move it to "
                                 f"{'a step' if level == 'PIPELINE' else 'the pipeline'}'s settings")
        try:
            instance = cls.model_validate(values or {})
        except ValidationError as err:
            raise RunConfigError(f"{path} ({cls.__name__}): {err}") from err
        problems = unknown_attributes(instance, values or {}, path)
        if problems:
            raise RunConfigError("; ".join(problems) + " (a misspelled attribute is ignored by ZenML)")


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
            raise RunConfigError(parameter_errors(err, f"parameters.{name}")) from err
    return checked


def check_step_names(pipeline_name: str, configured: Iterable[str], invocations: Iterable[str]) -> None:
    """Refuse ``steps:`` names that are not step invocations of the pipeline (ZenML only warns and drops
    their settings). Used by this check and by every pipeline when it runs (:mod:`ops.pipeline`)."""
    known = sorted(invocations)
    unknown = sorted(set(configured) - set(known))
    if unknown:
        names = ", ".join(f"steps.{name}" for name in unknown)
        raise RunConfigError(f"{names} {'is not a step' if len(unknown) == 1 else 'are not steps'} of {pipeline_name}: "
                             f"rename {'it' if len(unknown) == 1 else 'them'} to one of its steps {known}")


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parameter_errors(err: ValidationError, prefix: str = "parameters") -> str:
    """A pydantic error in pipeline parameters as one line per problem: the field (``prefix`` + its
    location), the value given and what to do; the first line is the first problem."""
    lines = []
    for error in err.errors():
        where = ".".join([prefix, *(str(part) for part in error["loc"])])
        if error["type"] in ("missing", "missing_argument"):
            lines.append(f"{where} is missing: set it under parameters: in the run config")
        elif error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"{where} = {_shown(error['input'])} is not a setting there: remove it or correct its "
                         "spelling")
        else:
            lines.append(f"{where} = {_shown(error['input'])}: {error['msg']}; correct this value under "
                         "parameters: in the run config")
    return "\n".join(lines)


def validate_steps(pipeline, parameters: dict[str, Any], steps: dict[str, Any]) -> None:
    """Check the ``steps:`` section: step names, the keys of each step's section, its parameters and settings."""
    from zenml.config.step_configurations import StepConfigurationUpdate

    invocations = step_invocations(pipeline, parameters)
    check_step_names(pipeline.name, steps, invocations)
    for name, section in steps.items():
        section = section or {}
        bad = sorted(set(section) - set(StepConfigurationUpdate.model_fields))
        if bad:
            raise RunConfigError(f"unknown key(s) {bad} in steps.{name}")
        validate_step_parameters(invocations[name], section.get("parameters") or {}, f"steps.{name}.parameters")
        validate_settings(section.get("settings") or {}, f"steps.{name}.settings", "STEP")


def check_run_config(raw: dict[str, Any], config_path: Path) -> None:
    """Every check on the parsed config; raises :class:`RunConfigError` without the file name."""
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    unknown = sorted(set(raw) - set(PipelineRunConfiguration.model_fields))
    if unknown:
        raise RunConfigError(f"unknown top-level key(s) {unknown}")
    try:
        PipelineRunConfiguration.model_validate(raw)
    except ValidationError as err:
        raise RunConfigError(str(err)) from err
    validate_settings(raw.get("settings") or {}, "settings", "PIPELINE")
    pipeline = load_pipeline(pipeline_source(config_path))
    params = validate_parameters(pipeline, raw.get("parameters") or {})
    validate_steps(pipeline, params, raw.get("steps") or {})  # compiles the pipeline even without steps:
    check_memory_plan(params, raw)


def check_memory_plan(params: dict[str, Any], raw: dict[str, Any] | None = None) -> None:
    """Check the config's plans against the hardware it names (``policy.gpu_memory_gb`` per GPU, ``train.num_processes``
    per node, ``train.num_nodes``): the training update, the rollout step and the evaluation each must fit.

    A real-model config (a policy that is not built in, on a device other than the CPU) must name its hardware."""
    policy = params.get("policy")
    if policy is None:
        return
    if policy.gpu_memory_gb is None:
        if is_builtin(policy.pretrained) or policy.device == "cpu":
            return
        raise RunConfigError(f"policy.gpu_memory_gb is not set: a real-model config ({policy.pretrained}) names the "
                             "hardware it runs on: set policy.gpu_memory_gb to one GPU's memory (e.g. 80) and, for "
                             "several GPUs, train.num_processes and train.distributed: fsdp (see docs/performance.md)")
    import torch

    from srpo.training.fit import check_inference_fits, check_rollouts_fit, check_training_fits

    gpu = torch.device("cuda")  # the override is the budget: nothing reads a device here
    train, rollouts = params.get("train"), params.get("rollouts")
    check_multinode_scale(params, raw or {})
    try:
        if rollouts is not None and params.get("prompts") is not None:
            print(check_rollouts_fit(policy, rollouts, rollouts.num_prompts or 32).describe())
        if train is not None:
            reward = params.get("rewards") or params.get("reward")  # a multi-reward is what the update holds
            print(check_training_fits(policy, train, reward, gpu, metrics=params.get("metrics")).describe())
        if params.get("evaluation") is not None:
            batch = getattr(params.get("report"), "batch_size", 4)
            scorers = [params.get("reward"), *(params.get("extra_rewards") or {}).values(),
                       *(params.get("metrics") or {}).values()]
            print(check_inference_fits(policy, gpu, batch, batch, decode_batch=batch, step="evaluation",
                                       scorers=[c for c in scorers if c is not None]).describe())
    except ValueError as err:
        raise RunConfigError(str(err)) from err


def check_multinode_scale(params: dict[str, Any], raw: dict[str, Any]) -> None:
    """A multi-node config's ``nproc_per_node`` and pod count must be the ``train.num_processes`` and
    ``train.num_nodes`` its plan shards over."""
    train = params.get("train")
    if train is None or "nproc_per_node" not in params:
        return
    if params["nproc_per_node"] != train.num_processes:
        raise RunConfigError(f"train.num_processes = {train.num_processes} but nproc_per_node = "
                             f"{params['nproc_per_node']}: set train.num_processes to the processes each node runs")
    for name, section in (raw.get("steps") or {}).items():
        for key, value in ((section or {}).get("settings") or {}).items():
            pods = (value or {}).get("pod_count") if key.startswith("step_operator") else None
            if pods is not None and pods != train.num_nodes:
                raise RunConfigError(f"train.num_nodes = {train.num_nodes} but steps.{name}.settings.{key}.pod_count "
                                     f"= {pods}: set train.num_nodes to the pods the job runs")


def validate_run_config(config_path: str | Path) -> dict[str, Any]:
    """Validate ``config_path`` fully; returns the parsed YAML. Raises :class:`RunConfigError` naming the file."""
    config_path = Path(config_path)
    raw = yaml.safe_load(config_path.read_text()) or {}
    try:
        if not isinstance(raw, dict):
            raise RunConfigError(f"the file holds a YAML {type(raw).__name__}, not a mapping of run config keys")
        check_run_config(raw, config_path)
    except RunConfigError as err:
        raise RunConfigError(f"{config_path}: {err}") from err
    return raw


def main(paths: Sequence[str]) -> int:
    """Validate every file, print one line per file; 1 if any failed (each failure is reported, none stops the rest)."""
    status = 0
    for path in paths:
        try:
            validate_run_config(path)
            print(f"ok    {path}")
        except RunConfigError as err:
            print(f"error {err}")
            status = 1
        except Exception as err:  # noqa: BLE001 - an unreadable file or a failing import must not hide the others
            print(f"error {path}: {type(err).__name__}: {err}")
            status = 1
    return status


def parse_args(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m ops.validate", description=__doc__.split("\n")[0])
    parser.add_argument("paths", metavar="CONFIG", nargs="+", help="run config files, e.g. configs/*.yaml")
    return parser.parse_args(argv).paths


if __name__ == "__main__":
    sys.exit(main(parse_args()))
