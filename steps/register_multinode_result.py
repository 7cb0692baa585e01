"""Register what the multi-node command step trained as a ZenML artifact of this run."""

import json
from pathlib import Path

from zenml import get_step_context, register_artifact, step
from zenml.client import Client
from zenml.enums import ArtifactType

from materializers.model_folder import ModelFolderMaterializer
from srpo.artifacts import ModelFolder

ARTIFACT_NAME = "tuned_transformer"


@step
def register_multinode_result(work_dir: str) -> None:
    """Copy ``work_dir/out`` into the artifact store and register it as ``tuned_transformer``.

    A command step has no outputs, so the trained folder is written where every pod sees it; this
    step (a regular one, after the command step) copies it file by file with a SHA-256 manifest
    (the model-folder materializer's layout) under this step run's folder in the artifact store and
    registers it with ``zenml.register_artifact``: the artifact version is this step run's output
    (its lineage: the run, the pipeline, the run's Model version) and carries the training log's
    numbers as metadata. ``zenml.load_artifact`` gives the folder back as a local ``Path``.
    """
    out = Path(work_dir) / "out"
    log_file = out / "training_log.json"
    if not log_file.is_file():
        raise FileNotFoundError(f"work_dir {work_dir}: no out/training_log.json, so the multi-node training did not "
                                "finish there; look at the command step's pod logs (pod 0 writes out/)")
    log = json.loads(log_file.read_text())
    kind = "lora" if (out / "pytorch_lora_weights.safetensors").exists() else "diffusers"
    store = Client().active_stack.artifact_store
    uri = f"{store.path}/srpo-multinode/{get_step_context().step_run.id}/{ARTIFACT_NAME}"
    ModelFolderMaterializer(uri, artifact_store=store).save(ModelFolder(out, kind=kind))
    history = log["history"]
    register_artifact(uri, name=ARTIFACT_NAME, artifact_type=ArtifactType.MODEL, artifact_metadata={
        "kind": kind, "processes": log["processes"], "strategy": log["strategy"], "steps": len(history),
        "skipped_updates": log["skipped_updates"], "final_reward": history[-1]["reward"] if history else None,
        "source": str(out)})
