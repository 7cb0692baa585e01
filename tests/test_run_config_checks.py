"""A run config that ZenML would run wrongly fails at ``zenml pipeline run``, before any step, with our message.

The tests call what ``zenml pipeline run SOURCE --config FILE`` calls (``zenml/cli/pipeline.py``:
``pipeline.with_options(config_path=FILE)()``), in a temporary ZenML store.
"""

from pathlib import Path

import pytest
import yaml

HEADER = "#   zenml pipeline run pipelines.training.srpo_training --config x.yaml\n"


def tiny_config(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(Path("configs/tiny_cpu.yaml").read_text())
    change(raw)
    path = tmp_path / "run.yaml"
    path.write_text(HEADER + yaml.safe_dump(raw))
    return path


def test_a_misspelled_step_name_fails_the_run_naming_it_and_the_steps(zenml_client, tmp_path):
    from ops.validate import RunConfigError
    from pipelines.training import srpo_training

    path = tiny_config(tmp_path, lambda raw: raw.update(steps={"train_srpp": {"enable_cache": False},
                                                               "evaluate": {"enable_cache": False}}))
    with pytest.raises(RunConfigError) as err:
        srpo_training.with_options(config_path=str(path))()
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{path}: steps.train_srpp is not a step of srpo_training"), first
    assert "'train_srpo'" in first and "'prepare_prompts'" in first and "evaluate" in first, first
    assert not zenml_client.list_pipeline_runs().items  # refused before a run (or any step) exists


def test_a_bad_parameter_names_the_field_the_value_and_the_fix_first(zenml_client, tmp_path):
    from ops.validate import RunConfigError
    from pipelines.training import srpo_training

    path = tiny_config(tmp_path, lambda raw: raw["parameters"]["train"].update(batch_size="many"))
    with pytest.raises(RunConfigError) as err:
        srpo_training.with_options(config_path=str(path))()
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{path}: parameters.train.batch_size = 'many': "), first
    assert "valid integer" in first and "correct this value under parameters:" in first, first
    assert "JSON serializable" not in str(err.value) and err.value.__cause__ is None
    assert err.value.__suppress_context__  # ZenML's wrapping message is not printed above ours

    path = tiny_config(tmp_path, lambda raw: raw["parameters"]["train"].update(learning_rat=1e-3))
    with pytest.raises(RunConfigError, match=r"parameters\.train\.learning_rat = 0\.001 is not a setting there: "
                                             "remove it or correct its spelling"):
        srpo_training.with_options(config_path=str(path))()
