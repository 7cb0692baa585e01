"""``srpo_training`` end to end for every model family, from ``configs/tiny_cpu_<family>.yaml``.

The runs share one ZenML store and are shortened (32 px, fewer rollout, training and evaluation steps,
one noise injection per update): what is checked is that each family's policy goes through every
step of the same pipeline, is trained, saved as its transformer and evaluated against its base.
"""

import json
from pathlib import Path

import pytest
import yaml

from srpo.models.families import FAMILIES, detect_family, resolve_location

FAMILY_CONFIGS = ["qwen_image", "sd3", "flux2", "flux2_klein", "z_image"]  # configs/tiny_cpu_<name>.yaml
STEPS = 2  # training updates per run


def shortened(config: Path, tmp_path: Path) -> Path:
    """The config at 32 px with fewer steps and no caching, written next to the test's files."""
    raw = yaml.safe_load(config.read_text())
    params = raw["parameters"]
    params["policy"].update(height=32, width=32)  # FLUX.2's x16 latent: 2 x 2 cells, still every code path
    params["rollouts"]["num_steps"] = 2
    params["train"].update(steps=STEPS, num_injections=1)  # the injection loop: tests/training/test_trainer.py
    params["evaluation"]["num_steps"] = 2
    raw["enable_cache"] = False
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_the_training_pipeline_runs_end_to_end_for_the_family(name, module_zenml_client, tmp_path):
    from pipelines.training import srpo_training

    family = name.replace("_", "-")
    config = Path(f"configs/tiny_cpu_{name}.yaml")
    pretrained = yaml.safe_load(config.read_text())["parameters"]["policy"]["pretrained"]
    assert detect_family(resolve_location(pretrained)) == family

    run = srpo_training.with_options(config_path=str(shortened(config, tmp_path)))()
    run = module_zenml_client.get_pipeline_run(run.id)
    assert run.status == "completed"
    folder = run.steps["train_srpo"].outputs["tuned_transformer"][0].load()
    saved = json.loads((folder.path / "config.json").read_text())
    assert saved["_class_name"] == FAMILIES[family].transformer_class  # the family's own layout
    log = json.loads((folder.path / "training_log.json").read_text())
    assert [h["step"] for h in log["history"]] == list(range(STEPS))
    evaluation = run.steps["evaluate"].outputs["evaluation"][0].load()
    assert set(evaluation["means"]) == {"base", "tuned"}
    assert all(value == value for value in evaluation["means"].values())  # finite scores, no NaN
