"""The srpo_training pipeline end to end on the local ZenML stack with the tiny config.

The tests share one ZenML store (``module_zenml_client``): each asserts on its own runs and on counts
taken before it, so the order does not matter.
"""

import pytest

from _servers import TINY_SMALLER, run_tiny, tiny_config


def tuned_weights(run):
    from safetensors.torch import load_file

    folder = run.steps["train_srpo"].outputs["tuned_transformer"][0].load()
    (weights,) = sorted(folder.path.glob("*.safetensors"))
    return folder, load_file(weights)


def test_tiny_pipeline_runs_and_is_reproducible(module_zenml_client, tmp_path):
    client = module_zenml_client
    first = run_tiny(tmp_path, enable_cache=False)
    run = client.get_pipeline_run(first.id)
    assert run.status == "completed"
    assert set(run.steps) == {"prepare_prompts", "generate_rollouts", "train_srpo", "evaluate", "export_human_eval"}

    train, heldout = (run.steps["prepare_prompts"].outputs[k][0].load() for k in ("train_prompts", "heldout_prompts"))
    assert train and heldout and not set(train) & set(heldout)

    rollouts = run.steps["generate_rollouts"].outputs["rollouts"][0].load()
    assert len(rollouts) == len(train) and rollouts.x0.shape == rollouts.eps.shape

    artifact = run.steps["train_srpo"].outputs["tuned_transformer"][0]
    assert artifact.type == "ModelArtifact"
    folder, weights = tuned_weights(run)
    assert (folder.path / "config.json").exists() and (folder.path / "training_log.json").exists()
    assert len(run.steps["train_srpo"].run_metadata["reward_curve"]) == TINY_SMALLER["train"]["steps"]

    evaluation = run.steps["evaluate"].outputs["evaluation"][0].load()
    assert set(evaluation["means"]) == {"base", "tuned"}
    assert evaluation["prompts"] == heldout
    assert "delta_reward" in run.steps["evaluate"].run_metadata
    # the same evaluation as srpo_evaluation: full results with intervals and images, then the human-eval export
    results = run.steps["evaluate"].outputs["evaluation_results"][0].load().read_json()
    assert results["models"] == ["base", "tuned"] and [it["prompt"] for it in results["items"]] == heldout
    assert {(r["model"], r["metric"]) for r in results["deltas"]} == {("tuned", "reward")}
    key = run.steps["export_human_eval"].outputs["human_eval_key"][0].load()
    assert set(key["studies"]) == {"quality"} and key["studies"]["quality"]["models"] == ["base", "tuned"]

    # the second run also promotes and exports (the weekly configs' steps): the same weights, a stage, files
    extra = {"promotion": {"primary_metric": "reward", "bootstrap_samples": 200},
             "export": {"formats": ["diffusers", "comfyui"], "out": str(tmp_path / "exports")}}
    second = client.get_pipeline_run(run_tiny(tmp_path, parameters=extra, enable_cache=False).id)
    _, weights_again = tuned_weights(second)
    assert weights.keys() == weights_again.keys()
    assert all((weights[k] == weights_again[k]).all() for k in weights)
    assert second.steps["evaluate"].outputs["evaluation"][0].load()["means"] == evaluation["means"]
    stage = second.steps["promote_model"].outputs["promotion_stage"][0].load()
    version = client.get_model_version("srpo-tiny-cpu", second.model_version.id)
    assert version.run_metadata["promotion_stage"] == stage and version.run_metadata["promotion_against"] == "base"
    assert any(t.name.startswith("promotion:") for t in version.tags)
    exported = tmp_path / "exports" / str(version.name)
    assert (exported / "diffusers" / "transformer" / "config.json").exists()
    assert "python -m ops.lineage srpo-tiny-cpu" in (exported / "comfyui" / "README.md").read_text()

    import ops.export  # the command line on the same version (a full fine-tune: the single file ComfyUI loads)
    ops.export.main(["srpo-tiny-cpu", "--version", str(version.name), "--format", "single-file", "--out",
                     str(tmp_path / "cli")])
    assert (tmp_path / "cli" / "model.safetensors").exists()
    with pytest.raises(SystemExit):  # kohya is a LoRA layout: refused with the fix, nothing written
        ops.export.main(["srpo-tiny-cpu", "--stage", "latest", "--format", "kohya", "--out", str(tmp_path / "k")])
    assert not (tmp_path / "k").exists()


def test_a_missing_prompt_file_fails_the_first_step_and_registers_nothing(module_zenml_client, tmp_path):
    client = module_zenml_client

    def versions(artifact: str) -> int:
        return client.list_artifact_versions(artifact=artifact).total

    before = {name: versions(name) for name in ("tuned_transformer", "train_prompts")}
    prompts = {**tiny_config()["parameters"]["prompts"], "source": str(tmp_path / "missing.txt")}
    with pytest.raises(RuntimeError, match="prepare_prompts"):
        run_tiny(tmp_path, parameters={"prompts": prompts}, enable_cache=False)
    runs = client.list_pipeline_runs(sort_by="desc:created").items
    assert runs and runs[0].status == "failed"
    assert {name: versions(name) for name in before} == before  # no artifact version was registered
