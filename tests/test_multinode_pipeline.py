"""The step after the multi-node command step: the trained folder becomes a registered artifact of the run."""

import json

import pytest
from zenml import pipeline

from steps.register_multinode_result import ARTIFACT_NAME, register_multinode_result


@pipeline(enable_cache=False)
def register_only(work_dir: str) -> None:
    register_multinode_result(work_dir=work_dir)


def write_result(out, steps: int = 3) -> dict[str, bytes]:
    files = {"config.json": b'{"_class_name": "FluxTransformer2DModel"}',
             "diffusion_pytorch_model.safetensors": bytes(range(256)) * 40}
    out.mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    history = [{"step": s, "reward": 0.1 * s} for s in range(steps)]
    log = {"processes": 32, "strategy": "fsdp", "skipped_updates": 0, "history": history}
    files["training_log.json"] = json.dumps(log).encode()
    (out / "training_log.json").write_bytes(files["training_log.json"])
    return files


def test_the_folder_is_registered_as_this_step_runs_model_artifact(zenml_client, tmp_path):
    files = write_result(tmp_path / "shared" / "out")
    run = register_only(work_dir=str(tmp_path / "shared"))
    step_run = zenml_client.get_pipeline_run(run.id).steps["register_multinode_result"]
    (version,) = step_run.outputs[ARTIFACT_NAME]  # lineage: an output of this step run
    assert version.type == "ModelArtifact" or str(version.type).endswith("MODEL")
    assert version.uri.startswith(zenml_client.active_stack.artifact_store.path)
    meta = version.run_metadata
    assert (meta["processes"], meta["strategy"], meta["steps"]) == (32, "fsdp", 3)
    assert meta["final_reward"] == pytest.approx(0.2)

    from zenml import load_artifact

    folder = load_artifact(ARTIFACT_NAME)  # the folder as copied into the store, manifest included
    stored = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert {k: stored[k] for k in files} == files
    manifest = json.loads(stored["manifest.json"])
    assert manifest["kind"] == "diffusers" and {f["path"] for f in manifest["files"]} == set(files)


def test_a_folder_without_a_finished_training_is_a_clear_error(tmp_path):
    (tmp_path / "shared" / "out").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"^work_dir .*: no out/training_log.json, so the multi-node "
                                                r"training did not finish there"):
        register_multinode_result.entrypoint(work_dir=str(tmp_path / "shared"))
