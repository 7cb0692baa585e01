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


@pytest.mark.parametrize("change, first_line", [
    (lambda raw: raw["parameters"]["train"].update(finetune="lora", lora_rank=100000),
     r"train.lora_rank = 100000 is above the width of the smallest layer LoRA adapts in builtin:tiny-flux's "
     r"transformer \(.*width (\d+)\): set train.lora_rank to at most \1"),
    (lambda raw: raw["parameters"]["train"].update(positive_words=["x" * 10_000]),
     r"train.positive_words\[0\] = 'x+'... \(10000 characters\) is 2501 tokens, .* reward.name 'clip' reads 77 "
     r"text tokens"),
    (lambda raw: raw["parameters"]["policy"].update(family="sd3"),
     r"policy.family = 'sd3', but builtin:tiny-flux is a FluxPipeline .* which is family 'flux': set policy.family: flux"),
], ids=["lora_rank", "control_word", "family"])
def test_settings_that_do_not_fit_the_models_are_refused_before_any_step(zenml_client, tmp_path, monkeypatch,
                                                                        change, first_line):
    """Each is refused when the pipeline compiles (``zenml pipeline run`` and ``python -m ops.validate``),
    naming the setting, the value and the fix on the first line; no weights load and no run exists."""
    import re

    from ops.validate import RunConfigError, validate_run_config
    from pipelines.training import srpo_training

    for loader in ("diffusers.FluxPipeline.from_pretrained", "diffusers.StableDiffusion3Pipeline.from_pretrained",
                   "transformers.CLIPModel.from_pretrained"):
        monkeypatch.setattr(loader, lambda *a, **k: pytest.fail("weights were loaded"))
    path = tiny_config(tmp_path, change)
    with pytest.raises(RunConfigError) as err:
        validate_run_config(path)
    first = str(err.value).splitlines()[0]
    assert re.match(rf"{re.escape(str(path))}: {first_line}", first), first
    with pytest.raises(ValueError) as err:
        srpo_training.with_options(config_path=str(path))()
    assert re.match(first_line, str(err.value).splitlines()[0]), str(err.value)
    assert not zenml_client.list_pipeline_runs().items  # refused before a run (or any step) exists
