"""Bad input gets a clear error that names the problem and the fix."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from srpo.config import PolicyConfig, RolloutConfig, TrainConfig, training_levels
from srpo.rewards import RewardConfig

CONFIGS = sorted(Path("configs").glob("*.yaml"))


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
    with pytest.raises(ValidationError, match="above 0.99: start the grid at lower noise"):
        TrainConfig(sigma_range=(0.5, 0.98), d_sigma=0.05)
    with pytest.raises(ValidationError, match="above 0.99: start the grid at lower noise.*larger grid_start_index"):
        TrainConfig(grid_start_index=1)
    with pytest.raises(ValidationError, match="not above 0: end the grid at higher noise"):
        TrainConfig(sigma_range=(0.01, 0.5), d_sigma=0.05)
    grid, d = training_levels(TrainConfig())
    assert grid.max() + d <= 0.99 and d == pytest.approx(0.0214, abs=1e-3)


@pytest.mark.parametrize("field", ["positive_words", "negative_words"])
def test_empty_control_word_lists_are_refused(field):
    with pytest.raises(ValidationError, match="control word"):
        TrainConfig(**{field: []})
    with pytest.raises(ValidationError, match="blank"):
        TrainConfig(**{field: ["Real", "  "]})


def test_plain_reward_needs_no_words_but_inversion_does():
    TrainConfig(method="direct_align", inversion=False, reward_form="plain", positive_words=[], negative_words=[])
    with pytest.raises(ValidationError, match="inversion"):
        TrainConfig(method="direct_align", inversion=True)


def test_a_plain_reward_on_the_inversion_branch_is_refused():
    """Both branches would maximise the same reward through opposite steps: the gradients cancel."""
    with pytest.raises(ValidationError, match="reward_form 'plain'.*inversion: false"):
        TrainConfig(method="srpo", inversion=True, reward_form="plain")
    TrainConfig(method="srpo", inversion=False, reward_form="plain")


def test_a_checkpoint_url_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="checkpoint_dir 's3://b/ck' is a URL.*mount the bucket"):
        TrainConfig(checkpoint_dir="s3://b/ck")
    assert TrainConfig(checkpoint_dir="/mnt/ck").checkpoint_dir == "/mnt/ck"


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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from pipelines.validate import validate_run_config

    validate_run_config(path)


def test_misspelled_step_names_and_parameters_are_errors(tmp_path):
    from pipelines.validate import RunConfigError, validate_run_config

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

