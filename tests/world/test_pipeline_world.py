"""shapes_bootstrap then srpo_training with a world report, end to end on ZenML, at tiny sizes."""

import json
from pathlib import Path

import yaml

BOOTSTRAP = Path("configs/shapes_bootstrap.yaml")
BOOTSTRAP_EDIT = Path("configs/shapes_bootstrap_edit.yaml")
DEMO = Path("configs/shapes_demo.yaml")
GRPO = Path("configs/shapes_grpo.yaml")

TINY_GENERATOR = dict(layers=1, single_layers=1, heads=2, head_dim=8, axes_dims_rope=[2, 2, 4], text_dim=16,
                      pooled_dim=16, steps=20, batch_size=16, learning_rate=3e-3, pool_size=64)
TINY_REWARD = dict(width=32, layers=1, projection_dim=16, steps=10, batch_size=16, pool_size=64)
TINY_CHECKS = dict(heldout_images=16, samples_per_prompt=1, num_steps=3)
TINY_EDIT = dict({k: v for k, v in TINY_GENERATOR.items() if k != "pool_size"}, steps=2, batch_size=4, pool_size=16,
                 check_edits=4)


def write(tmp_path, source, name, edit):
    raw = yaml.safe_load(source.read_text())
    edit(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def tiny_bootstrap(raw):
    raw["parameters"]["generator"] = TINY_GENERATOR
    raw["parameters"]["reward"] = TINY_REWARD
    raw["parameters"]["checks"] = TINY_CHECKS


def tiny_bootstrap_edit(raw):
    tiny_bootstrap(raw)
    raw["parameters"]["edit"] = TINY_EDIT


def tiny_demo(raw):
    p = raw["parameters"]
    p["prompts"]["max_train"] = 4  # rollouts of 4 prompts, not 45: two updates of batch 2 read no more
    p["rollouts"]["num_steps"] = 3
    p["train"].update(steps=2, batch_size=2, num_injections=1)
    p["evaluation"]["num_steps"] = 3
    p["evaluation"]["num_prompts"] = 2
    p["train"]["guard"].update(every=1, num_prompts=2, seeds_per_prompt=1, batch_size=2, num_steps=3)
    for rule in p["train"]["guard"]["rules"].values():  # 2 images resolve only wide tolerances
        rule.update(drop=0.9, expect=None) if "drop" in rule else rule.update(drift=0.9)
    p["world"] = dict(samples_per_prompt=1, num_steps=3, grid_columns=4)


def tiny_grpo(raw):
    p = raw["parameters"]
    p["prompts"]["max_train"] = 4  # the demo's prompts and rollouts (its cached steps)
    p["rollouts"]["num_steps"] = 3
    p["train"].update(steps=2, batch_size=2)
    p["train"]["grpo"].update(group_size=2, num_train_steps=2, micro_batch=2)
    p["evaluation"].update(num_steps=3, num_prompts=2)
    p["world"] = dict(samples_per_prompt=1, num_steps=3, grid_columns=4)


def test_bootstrap_publishes_and_the_demo_reports_before_and_after(zenml_client, tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    from pipelines.bootstrap import shapes_bootstrap
    from pipelines.training import srpo_training
    from srpo.published import published_fingerprint, published_path

    config = write(tmp_path, BOOTSTRAP, "bootstrap.yaml", tiny_bootstrap)
    first = zenml_client.get_pipeline_run(shapes_bootstrap.with_options(config_path=config)().id)
    assert first.status == "completed"
    checks = first.steps["check_world"].outputs["world_checks"][0].load()
    assert {"reward", "generator", "grader", "passed"} <= set(checks)
    assert checks["grader"]["drawn"]["colours"] == 1.0
    assert (published_path("shapes-flux") / "model_index.json").exists()
    assert (published_path("shapes-clip") / "config.json").exists()
    fingerprint = published_fingerprint()

    second = zenml_client.get_pipeline_run(shapes_bootstrap.with_options(config_path=config)().id)
    assert second.steps["train_world_generator"].status == "cached"
    assert second.steps["train_world_reward"].status == "cached"
    assert published_fingerprint() == fingerprint  # re-published, same files

    # the opt-in edit model: the world's trainings come from the cache, the edit model starts from the generator
    edit = write(tmp_path, BOOTSTRAP_EDIT, "bootstrap_edit.yaml", tiny_bootstrap_edit)
    third = zenml_client.get_pipeline_run(shapes_bootstrap.with_options(config_path=edit)().id)
    assert third.status == "completed"
    assert third.steps["train_world_generator"].status == "cached" and third.steps["check_world"].status == "cached"
    from srpo.models.families import load_policy_for
    from srpo.published import resolve_builtin

    kontext = resolve_builtin("policy", "builtin:shapes-kontext")
    info = json.loads((kontext / "world.json").read_text())
    assert info["kind"] == "shapes-kontext" and info["init"] and info["check"]["model"]["n"] == 4
    assert type(load_policy_for(str(kontext), "flux-kontext")).__name__ == "FluxKontextPolicy"
    assert published_fingerprint() != fingerprint and "shapes-kontext=" in published_fingerprint()

    demo = write(tmp_path, DEMO, "demo.yaml", tiny_demo)
    run = zenml_client.get_pipeline_run(srpo_training.with_options(config_path=demo)().id)
    assert run.status == "completed"
    step = run.steps["world_report"]
    report = step.outputs["world_report"][0].load()
    assert report["steering"] == {"attribute": "brightness", "towards": "bright", "word": "bright",
                                  "negative_word": "dark"}
    assert set(report["before"]) == set(report["after"]) and "steered_share" in report["before"]
    assert [p["step"] for p in report["curve"]] == [0, 1, 2]
    assert report["guard"]["selected_update"] in (0, 1, 2)  # the curves are the guard's checks during training
    assert step.outputs["world_grid"][0].load().size[0] > 0
    assert step.outputs["world_curves"][0].load().size[0] > 0
    assert "share bright" in step.outputs["world_table"][0].load()
    assert "guard: 3 checks, published update" in report["table"]  # what make demo prints

    # the same world with GRPO on the pixel grader, a score-only reward (configs/shapes_grpo.yaml)
    grpo = write(tmp_path, GRPO, "grpo.yaml", tiny_grpo)
    run = zenml_client.get_pipeline_run(srpo_training.with_options(config_path=grpo)().id)
    assert run.status == "completed"
    folder = run.steps["train_srpo"].outputs["tuned_transformer"][0].load()
    log = json.loads((folder.path / "training_log.json").read_text())
    assert log["config"]["method"] == "grpo" and log["config"]["grpo"]["group_size"] == 2
    assert [h["step"] for h in log["history"]] == [0, 1] and not any(h["skipped"] for h in log["history"])
    report = run.steps["world_report"].outputs["world_report"][0].load()
    assert set(report["before"]) == set(report["after"]) and "steered_share" in report["after"]
