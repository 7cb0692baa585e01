"""Bad input gets a clear error that names the problem and the fix."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from srpo.config import PolicyConfig, RolloutConfig, TrainConfig, training_levels
from srpo.rewards import RewardConfig

CONFIGS = sorted(Path("configs").glob("*.yaml"))
#: Shipped configs whose fields or reward the trainer does not take yet (issue 16: `rewards:`, the image-only
#: form, a joint reward); strict, so the mark must go when the trainer integration lands.
AWAITING_TRAINER: dict[str, str] = {}  # config file name -> the trainer feature it waits for


def test_resolution_must_be_a_multiple_of_16():
    with pytest.raises(ValidationError, match="multiple of 16"):
        PolicyConfig(height=100)
    PolicyConfig(height=720, width=1024)


def test_frozen_weights_in_another_dtype_need_autocast():
    with pytest.raises(ValidationError, match="autocast: bfloat16"):
        PolicyConfig(frozen_dtype="bfloat16")
    assert PolicyConfig(frozen_dtype="bfloat16", autocast="bfloat16").frozen_dtype == "bfloat16"
    assert PolicyConfig(frozen_dtype="float32").frozen_dtype == "float32"  # the same as dtype: nothing to mix


@pytest.mark.parametrize("bounds", [(0.0, 0.9), (0.5, 0.995), (0.9, 0.5), (-0.1, 0.5)])
def test_sigma_bounds_outside_zero_to_099_are_refused(bounds):
    with pytest.raises(ValidationError, match=r"0 < low < high <= 0.99"):
        TrainConfig(sigma_range=bounds)


def test_a_step_that_leaves_the_allowed_range_is_refused_with_the_fix_for_that_end():
    """The config checks its grid; the method's row checks its model step beyond it (before any model)."""
    from srpo.training.methods import check_method

    def run(**kw):
        check_method(TrainConfig(**kw), RolloutConfig())

    with pytest.raises(ValueError, match="plus the model step reaches.*above 0.99: start the grid at lower noise"):
        run(sigma_range=(0.5, 0.98), d_sigma=0.05)
    with pytest.raises(ValueError, match="above 0.99: start the grid at lower noise.*larger grid_start_index"):
        run(grid_start_index=1)
    with pytest.raises(ValueError, match="minus the model step reaches.*not above 0: end the grid at higher noise"):
        run(sigma_range=(0.01, 0.5), d_sigma=0.05)
    # methods that predict from the level itself (no model step) train the same grid
    run(method="refl", inversion=False, sigma_range=(0.5, 0.98), d_sigma=0.05)
    run(method="direct_align", inversion=False, sigma_range=(0.01, 0.5), d_sigma=0.05)  # no inversion: no step down
    grid, d = training_levels(TrainConfig(), step_up=True, step_down=True)
    assert grid.max() + d <= 0.99 and d == pytest.approx(0.0214, abs=1e-3)


@pytest.mark.parametrize("field", ["positive_words", "negative_words"])
def test_empty_control_word_lists_are_refused(field):
    with pytest.raises(ValidationError, match="control word"):
        TrainConfig(**{field: []})
    with pytest.raises(ValidationError, match="blank"):
        TrainConfig(**{field: ["Real", "  "]})


def test_plain_reward_needs_no_words_but_inversion_does():
    TrainConfig(method="direct_align", inversion=False, reward_form="plain", positive_words=[], negative_words=[])
    from srpo.training.methods import check_method

    with pytest.raises(ValueError, match="train.inversion is true but the inversion branch belongs to method srpo"):
        check_method(TrainConfig(method="direct_align", inversion=True), RolloutConfig())


def test_a_plain_reward_on_the_inversion_branch_is_refused():
    """Both branches would maximise the same reward through opposite steps: the gradients cancel."""
    with pytest.raises(ValidationError, match="reward_form 'plain'.*inversion: false"):
        TrainConfig(method="srpo", inversion=True, reward_form="plain")
    TrainConfig(method="srpo", inversion=False, reward_form="plain")


def test_a_checkpoint_url_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="checkpoint_dir 's3://b/ck' is a URL.*mount the bucket"):
        TrainConfig(checkpoint_dir="s3://b/ck")
    assert TrainConfig(checkpoint_dir="/mnt/ck").checkpoint_dir == "/mnt/ck"
    assert TrainConfig(checkpoint_dir="file:///mnt/ck").checkpoint_dir == "/mnt/ck"


def test_fusing_branches_without_an_inversion_branch_is_refused():
    with pytest.raises(ValidationError, match="fuse_branches.*inversion is false"):
        TrainConfig(inversion=False, fuse_branches=True)


def test_unknown_reward_name_lists_the_known_ones():
    with pytest.raises(ValidationError, match="hpsv2.1"):
        RewardConfig(name="hps3")


def test_offline_mode_needs_an_image_folder():
    with pytest.raises(ValidationError, match="metadata.jsonl"):
        RolloutConfig(mode="offline")


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError, match="learning_rat"):
        TrainConfig(learning_rat=1e-3)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(
    strict=True, reason=f"awaits trainer support for {AWAITING_TRAINER[p.name]}")) if p.name in AWAITING_TRAINER else p
    for p in CONFIGS], ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from ops.validate import validate_run_config

    validate_run_config(path)


def test_misspelled_step_names_and_parameters_are_errors(tmp_path):
    from ops.validate import RunConfigError, validate_run_config

    raw = yaml.safe_load(Path("configs/tiny_cpu.yaml").read_text())
    header = "#   zenml pipeline run pipelines.training.srpo_training --config x.yaml\n"

    def write(cfg):
        path = tmp_path / "x.yaml"
        path.write_text(header + yaml.safe_dump(cfg))
        return path

    with pytest.raises(RunConfigError, match="train_srp0 is not a step"):
        validate_run_config(write({**raw, "steps": {"train_srp0": {"enable_cache": False}}}))
    with pytest.raises(RunConfigError, match="unknown pipeline parameter"):
        validate_run_config(write({**raw, "parameters": {**raw["parameters"], "trian": {}}}))
    with pytest.raises(RunConfigError, match="parameters.train"):
        validate_run_config(write({**raw, "parameters": {**raw["parameters"], "train": {"steps": 0}}}))
    with pytest.raises(RunConfigError, match="top-level"):
        validate_run_config(write({**raw, "enable_cahce": False}))
    no_header = tmp_path / "y.yaml"
    no_header.write_text(yaml.safe_dump(raw))
    with pytest.raises(RunConfigError, match="header"):
        validate_run_config(no_header)


def _write_variant(tmp_path: Path, source: Path, change) -> Path:
    """``source`` with its header comment, its YAML changed in place by ``change(raw)``."""
    text = source.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    raw = yaml.safe_load(text)
    change(raw)
    path = tmp_path / f"{source.stem}-variant.yaml"
    path.write_text(header + yaml.safe_dump(raw))
    return path


def test_validation_never_contacts_the_artifact_store(zenml_client, monkeypatch):
    """A config with a steps: section compiles the pipeline; its preflight must not reach the (down) S3 store."""
    from zenml.enums import StackComponentType

    from _servers import free_port
    from ops.preflight import ArtifactStoreUnavailable, check_artifact_store
    from ops.validate import main, validate_run_config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    config = {"path": "s3://srpo-down/zenml",
              "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": "us-east-1"}}
    zenml_client.create_stack_component(name="s3-down", flavor="s3", component_type=StackComponentType.ARTIFACT_STORE,
                                        configuration=config)
    zenml_client.create_stack(name="s3-down", components={StackComponentType.ARTIFACT_STORE: "s3-down",
                                                          StackComponentType.ORCHESTRATOR: "default"})
    zenml_client.activate_stack("s3-down")
    with pytest.raises(ArtifactStoreUnavailable, match="cannot be reached"):
        check_artifact_store()  # what running the pipeline body would do

    validate_run_config(Path("configs/k8s_flux_hps.yaml"))
    assert main(["configs/k8s_flux_hps.yaml", "configs/k8s_weekly_retrain.yaml"]) == 0
    with pytest.raises(ArtifactStoreUnavailable):  # skipped only while validating, not from then on
        check_artifact_store()


def test_every_file_is_checked_and_each_failure_names_its_file(tmp_path, capsys):
    from ops.validate import main

    broken = tmp_path / "broken.yaml"
    broken.write_text("parameters: [unclosed\n")
    no_module = tmp_path / "no_module.yaml"
    no_module.write_text("#   zenml pipeline run pipelines.nowhere.srpo_training --config x.yaml\nparameters: {}\n")
    missing = tmp_path / "missing.yaml"
    paths = [str(broken), str(no_module), str(missing), "configs/tiny_cpu.yaml"]

    assert main(paths) == 1
    lines = capsys.readouterr().out.splitlines()
    reports = [line for line in lines if line.startswith(("ok ", "error "))]
    assert len(reports) == 4, lines
    for path, line in zip(paths[:3], reports):
        assert line.startswith(f"error {path}: "), line
    assert "ModuleNotFoundError" in reports[1] and "FileNotFoundError" in reports[2]
    assert reports[3] == "ok    configs/tiny_cpu.yaml"


K8S_WEEKLY = Path("configs/k8s_weekly_retrain.yaml")


def _rename(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


@pytest.mark.parametrize("change, where, unknown, valid", [
    (lambda c: _rename(c["settings"]["docker"], "local_project_install_command", "local_project_install_comand"),
     "settings.docker", "local_project_install_comand", "local_project_install_command"),
    (lambda c: _rename(c["settings"]["orchestrator.kubernetes"], "concurrency_policy", "concurency_policy"),
     "settings.orchestrator.kubernetes", "concurency_policy", "concurrency_policy"),
    (lambda c: _rename(c["steps"]["train_srpo"]["settings"]["step_operator.kubernetes"], "active_deadline_seconds",
                       "active_deadline_secs"),
     "steps.train_srpo.settings.step_operator.kubernetes", "active_deadline_secs", "active_deadline_seconds"),
    (lambda c: _rename(c["steps"]["train_srpo"]["settings"]["step_operator.kubernetes"]["pod_settings"],
                       "node_selectors", "node_selector"),
     "steps.train_srpo.settings.step_operator.kubernetes.pod_settings", "node_selector", "node_selectors"),
    (lambda c: c["steps"]["train_srpo"].update(parameters={"train": {}, "bogus": 1}),
     "steps.train_srpo.parameters", "bogus", "rollouts"),
], ids=["docker", "orchestrator", "step_operator", "nested_pod_settings", "step_parameter"])
def test_misspelled_settings_attributes_and_step_parameters_are_errors(tmp_path, change, where, unknown, valid):
    """ZenML only warns and drops these: a misspelled concurrency_policy would let two weekly runs overlap."""
    from ops.validate import RunConfigError, validate_run_config

    path = _write_variant(tmp_path, K8S_WEEKLY, change)
    with pytest.raises(RunConfigError) as err:
        validate_run_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}: unknown"), message
    assert f"'{unknown}'" in message and f"'{valid}'" in message  # names the typo and lists the valid attributes


def test_a_step_parameter_the_pipeline_already_passes_is_refused(tmp_path):
    """ZenML rejects it at run time ("conflict with parameter passed in runtime"); validation says so first."""
    from ops.validate import RunConfigError, validate_run_config

    path = _write_variant(tmp_path, K8S_WEEKLY, lambda c: c["steps"]["train_srpo"].update(parameters={"train": {}}))
    with pytest.raises(RunConfigError, match=r"\['train'\] is passed to train_srpo by the pipeline itself"):
        validate_run_config(path)


def test_settings_keys_must_name_a_settings_class(tmp_path, capsys):
    from ops.validate import RunConfigError, validate_run_config

    def check(change, match):
        with pytest.raises(RunConfigError, match=match):
            validate_run_config(_write_variant(tmp_path, K8S_WEEKLY, change))

    check(lambda c: c["settings"].update(resourcez={"gpu_count": 1}),
          r"'resourcez' is not a ZenML settings key.*resources")
    check(lambda c: _rename(c["settings"], "orchestrator.kubernetes", "orchestrator.kubernets"),
          r"'orchestrator.kubernets' names no ZenML flavor.*'orchestrator.kubernetes'")
    # a bare component type is resolved against the stack at run time: not checkable here, not an error
    validate_run_config(_write_variant(tmp_path, K8S_WEEKLY,
                                       lambda c: _rename(c["settings"], "orchestrator.kubernetes", "orchestrator")))
    assert "'orchestrator' selects the orchestrator of the stack" in capsys.readouterr().err
    check(lambda c: c["steps"]["train_srpo"]["settings"]["resources"].update(gpu_count="eight"),
          r"(?s)steps.train_srpo.settings.resources \(ResourceSettings\).*gpu_count")
    # extras that ZenML passes on are not typos: DockerBuildOptions hands them to `docker build`
    build_options = {"build_options": {"network": "host"}}
    validate_run_config(_write_variant(
        tmp_path, K8S_WEEKLY, lambda c: c["settings"]["docker"].update(build_config=build_options)))


@pytest.mark.parametrize("source, change, message", [
    ("configs/eval_tiny_cpu.yaml", lambda raw: raw["parameters"]["report"].update(baseline="nope"),
     r"report.baseline 'nope' is not an evaluated model \(\['base'\]\)"),
    ("configs/tiny_cpu.yaml", lambda raw: raw["parameters"].update(human_eval={"style": {"models": ["base", "tuned"]}}),
     r"human_eval.style needs style-variant prompts"),
    ("configs/tiny_cpu.yaml", lambda raw: raw["parameters"].update(human_eval={"quality": {"models": ["base", "tunde"]}}),
     r"human_eval.quality.models \['tunde'\] are not evaluated models \(\['base', 'tuned'\]\)"),
    ("configs/shapes_demo.yaml", lambda raw: raw["parameters"]["train"].update(positive_words=["glossy"]),
     r"none of the positive control words \['glossy'\] is a shapes-world attribute word"),
    ("configs/tiny_cpu.yaml", lambda raw: raw["parameters"]["train"].update(checkpoint_every=2),
     r"train.checkpoint_every is 2 but train.checkpoint_dir is not set"),
    ("configs/tiny_cpu.yaml", lambda raw: (raw["parameters"].update(reward={"name": "hpsv3", "checkpoint": "builtin:tiny"}),
                                          raw["parameters"]["train"].update(reward_form="image_relative", inversion=False)),
     r"reward form 'image_relative' is for image-only rewards .* but reward.name is 'hpsv3'"),
    ("configs/tiny_cpu.yaml", lambda raw: raw["parameters"].update(
        reward={"name": "aesthetic_v2.5", "checkpoint": "builtin:tiny"}),
     r"reward.name 'aesthetic_v2.5' reads no text, so reward form 'weighted' has nowhere to put its control words"),
    ("configs/eval_tiny_cpu.yaml", lambda raw: raw["parameters"].update(
        models={"base": {}, "other": {}}, metrics={"deqa": {"name": "deqa", "results": "/r/deqa.json"}}),
     r"metrics.deqa.results '/r/deqa.json' is one file for 2 models \(base, other\).*put \{model\} in the path"),
    ("configs/eval_tiny_cpu.yaml", lambda raw: raw["parameters"].update(
        metrics={"geneval": {"name": "geneval", "command": ["geneval", "{images}", "{output}"]}}),
     r"metrics.geneval \(geneval\) needs GenEval's per-prompt include/exclude specs.*benchmark.format: geneval"),
    ("configs/shapes_edit.yaml", lambda raw: raw["parameters"]["evaluation"].pop("edits"),
     r"evaluation.edits is not set, but this run trains on edits \(rollouts.edits 'data/edits/shapes'\)"),
    ("configs/shapes_edit.yaml", lambda raw: raw["parameters"]["evaluation"]["edits"].update(source="data/edits/shapes"),
     r"evaluation.edits.source 'data/edits/shapes' is rollouts.edits, the training pairs"),
    ("configs/tiny_cpu.yaml", lambda raw: raw["parameters"]["evaluation"].update(edits={"source": "data/edits/x"}),
     r"evaluation.edits 'data/edits/x' is set, but this run trains a text-to-image model"),
    ("configs/eval_tiny_cpu.yaml", lambda raw: raw["parameters"].setdefault("evaluation", {}).update(
        edits={"source": "data/edits/x"}), r"srpo_evaluation needs exactly one of benchmark .* and evaluation.edits"),
])
def test_settings_wrong_together_are_refused_before_any_step_runs(tmp_path, source, change, message):
    """Each setting is valid alone; the pipeline's body refuses the combination at compile time."""
    from ops.validate import RunConfigError, validate_run_config

    with pytest.raises(RunConfigError, match=message):
        validate_run_config(_write_variant(tmp_path, Path(source), change))


def test_hpsv3_trains_and_also_evaluates_as_an_extra_reward(tmp_path):
    """flux_hpsv3.yaml validates with HPSv3 as the training reward, and with it as an extra reward instead."""
    from ops.validate import validate_run_config

    validate_run_config(Path("configs/flux_hpsv3.yaml"))
    validate_run_config(_write_variant(tmp_path, Path("configs/flux_hpsv3.yaml"), lambda raw: raw["parameters"].update(
        reward={"name": "hpsv2.1", "checkpoint": "s3://srpo-models/HPS_v2.1_compressed.pt"},
        extra_rewards={"hpsv3": raw["parameters"]["reward"]})))


def test_geneval_with_a_geneval_benchmark_and_per_model_results_validates(tmp_path):
    from ops.validate import validate_run_config

    def change(raw):
        raw["parameters"]["benchmark"] = {"source": "s3://bench/geneval/evaluation_metadata.jsonl"}
        raw["parameters"]["models"] = {"base": {}, "other": {}}
        raw["parameters"]["metrics"] = {"geneval": {"name": "geneval", "results": "s3://r/geneval_{model}.jsonl"}}
    validate_run_config(_write_variant(tmp_path, Path("configs/eval_tiny_cpu.yaml"), change))


def test_srpo_evaluation_of_an_edit_model_validates_without_a_benchmark(tmp_path):
    """Held-out edits instead of a benchmark, scored by the edit reward's terms and the grader."""
    from ops.validate import validate_run_config

    def change(raw):
        params = raw["parameters"]
        del params["benchmark"], params["analysis"]
        params["policy"]["pretrained"] = "builtin:tiny-flux-kontext"
        params.setdefault("evaluation", {})["edits"] = {"source": "data/edits/shapes_heldout", "grader": "shapes"}
        params["rewards"] = {"rewards": [{"name": "keep", "reward": {"name": "hf_clip", "checkpoint": "builtin:tiny"},
                                          "against": "source", "form": "plain"}]}
    validate_run_config(_write_variant(tmp_path, Path("configs/eval_tiny_cpu.yaml"), change))
