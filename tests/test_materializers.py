"""RolloutSet persistence and the ZenML materializers (srpo/artifacts.py, materializers/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from zenml import pipeline, step

from materializers import ArtifactIntegrityError, ModelFolderMaterializer, RolloutSetMaterializer
from srpo.artifacts import ModelFolder, RolloutSet


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))


def rollouts(n: int = 4, dtype: torch.dtype = torch.float32) -> RolloutSet:
    g = torch.Generator().manual_seed(0)
    return RolloutSet(prompts=[f"prompt {i} ✓" for i in range(n)],
                      x0=torch.randn(n, 16, 8, 8, generator=g).to(dtype),   # [N, C, h, w]
                      eps=torch.randn(n, 16, 8, 8, generator=g).to(dtype),  # [N, C, h, w]
                      mode="online", height=64, width=64,
                      meta={"seeds": list(range(n)), "guidance": 1.0, "steps": 25, "policy": "tiny-flux"})


def assert_same(a: RolloutSet, b: RolloutSet) -> None:
    assert a.prompts == b.prompts and a.mode == b.mode and (a.height, a.width) == (b.height, b.width)
    assert a.meta == b.meta
    assert a.x0.dtype == b.x0.dtype and torch.equal(a.x0, b.x0) and torch.equal(a.eps, b.eps)


def make_model_folder(root: Path) -> ModelFolder:
    """A small diffusers-like folder with nested files, an empty file and binary data."""
    (root / "transformer").mkdir(parents=True)
    (root / "vae" / "deep" / "er").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (root / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(300_000))
    (root / "vae" / "deep" / "er" / "weights.bin").write_bytes(bytes(range(256)) * 7)
    (root / "vae" / "empty.txt").write_bytes(b"")
    return ModelFolder(path=root, kind="diffusers")


def store_uri(client, name: str) -> str:
    """A fresh artifact folder inside the client's (local) artifact store."""
    uri = os.path.join(client.active_stack.artifact_store.path, "tests", name)
    os.makedirs(uri)
    return uri


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------- RolloutSet

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rollout_set_round_trip(tmp_path, dtype):
    original = rollouts(dtype=dtype)
    original.save(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["meta.json", "tensors.safetensors"]
    assert_same(RolloutSet.load(tmp_path / "r"), original)


def test_rollout_set_batch():
    rs = rollouts(5)
    b = rs.batch([3, 1])
    assert len(b) == 2 and b.prompts == [rs.prompts[3], rs.prompts[1]]
    assert torch.equal(b.x0, rs.x0[[3, 1]]) and torch.equal(b.eps, rs.eps[[3, 1]])
    assert len(rs.batch(torch.tensor([0]))) == 1
    with pytest.raises(IndexError, match="batch indices"):
        rs.batch([5])


def test_rollout_set_validation():
    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        RolloutSet(["a", "b"], x, torch.zeros(2, 4, 8, 9), "online", 64, 64)
    with pytest.raises(ValueError, match="3 prompts for 2 latents"):
        RolloutSet(["a", "b", "c"], x, x.clone(), "online", 64, 64)
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        RolloutSet(["a", "b"], torch.zeros(2, 4, 8), torch.zeros(2, 4, 8), "online", 64, 64)
    with pytest.raises(ValueError, match="mode must be one of"):
        RolloutSet(["a", "b"], x, x.clone(), "replay", 64, 64)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        RolloutSet(["a", "b"], x, x.clone(), "offline", 64, 64, meta={"t": torch.ones(1)})


def test_rollout_set_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tensors.safetensors"):
        RolloutSet.load(tmp_path / "nothing")
    rollouts().save(tmp_path / "r")
    (tmp_path / "r" / "tensors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"tensors\.safetensors.*corrupt"):
        RolloutSet.load(tmp_path / "r")
    rollouts().save(tmp_path / "r")
    (tmp_path / "r" / "meta.json").write_text("{ truncated")
    with pytest.raises(ValueError, match=r"meta\.json.*corrupt"):
        RolloutSet.load(tmp_path / "r")
    (tmp_path / "r" / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        RolloutSet.load(tmp_path / "r")


# ------------------------------------------------------------------------------- materializers

def test_rollout_materializer_round_trip(zenml_client, tmp_path):
    uri = store_uri(zenml_client, "rollouts")
    original = rollouts()
    saver = RolloutSetMaterializer(uri=uri)
    saver.save(original)
    assert saver.compute_content_hash(original)
    assert saver.extract_full_metadata(original)["num_rollouts"] == 4
    assert_same(RolloutSetMaterializer(uri=uri).load(RolloutSet), original)
    os.remove(os.path.join(uri, "meta.json"))
    with pytest.raises(FileNotFoundError, match="meta.json"):
        RolloutSetMaterializer(uri=uri).load(RolloutSet)


def test_model_folder_materializer_round_trip(zenml_client, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    uri = store_uri(zenml_client, "model")
    saver = ModelFolderMaterializer(uri=uri)
    saver.save(folder)

    manifest = json.loads((Path(uri) / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == [p.as_posix() for p in folder.files()]
    assert (Path(uri) / "files" / "vae" / "deep" / "er" / "weights.bin").is_file()  # stored uncompressed
    meta = saver.extract_full_metadata(folder)
    assert meta["file_count"] == 4 and meta["total_size"] == sum(f["size"] for f in manifest["files"])
    content_hash = saver.compute_content_hash(folder)

    loader = ModelFolderMaterializer(uri=uri)
    loader.expected_content_hash = content_hash
    loaded = loader.load(ModelFolder)
    assert loaded.kind == "diffusers"
    assert tree(loaded.path) == tree(folder.path)
    assert Path(os.environ["SRPO_CACHE"]) / "artifacts" in loaded.path.parents
    assert ModelFolderMaterializer(uri=uri).load(ModelFolder).path == loaded.path  # cached copy reused

    (loaded.path / "model_index.json").write_text("{}")  # a damaged cached copy is fetched again
    assert tree(ModelFolderMaterializer(uri=uri).load(ModelFolder).path) == tree(folder.path)


def test_model_folder_corrupted_or_missing_file_is_named(zenml_client, tmp_path):
    folder = make_model_folder(tmp_path / "model")
    uri = store_uri(zenml_client, "model")
    ModelFolderMaterializer(uri=uri).save(folder)
    stored = Path(uri) / "files" / "vae" / "deep" / "er" / "weights.bin"
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF  # same size, different content
    stored.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"'vae/deep/er/weights\.bin'.*corrupt"):
        ModelFolderMaterializer(uri=uri).load(ModelFolder)
    assert not list((Path(os.environ["SRPO_CACHE"]) / "artifacts").iterdir())  # no partial copy left

    stored.unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"'vae/deep/er/weights\.bin' is missing"):
        ModelFolderMaterializer(uri=uri).load(ModelFolder)

    (Path(uri) / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ModelFolderMaterializer(uri=uri).load(ModelFolder)


def test_model_folder_errors_on_save_and_tampered_manifest(zenml_client, tmp_path):
    (tmp_path / "empty").mkdir()
    uri = store_uri(zenml_client, "model")
    with pytest.raises(ValueError, match="contains no files"):
        ModelFolderMaterializer(uri=uri).save(ModelFolder(tmp_path / "empty"))
    with pytest.raises(NotADirectoryError, match="missing"):
        ModelFolderMaterializer(uri=uri).save(ModelFolder(tmp_path / "missing"))

    saver = ModelFolderMaterializer(uri=uri)
    saver.save(make_model_folder(tmp_path / "model"))
    manifest_path = Path(uri) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["kind"] = "lora"
    manifest_path.write_text(json.dumps(manifest))
    loader = ModelFolderMaterializer(uri=uri)
    loader.expected_content_hash = saver.compute_content_hash(None)
    with pytest.raises(ArtifactIntegrityError, match="changed after the artifact was registered"):
        loader.load(ModelFolder)
    manifest["files"][0]["path"] = "../escape.json"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="not a safe relative path"):
        ModelFolderMaterializer(uri=uri).load(ModelFolder)


@step
def _produce(folder: str) -> tuple[ModelFolder, RolloutSet]:
    return make_model_folder(Path(folder)), rollouts(3)


@step
def _consume(model: ModelFolder, rs: RolloutSet, folder: str) -> int:
    assert tree(model.path) == tree(Path(folder)) and model.path != Path(folder)
    return len(rs) + len(model.files())


@pipeline(enable_cache=False)
def _roundtrip(folder: str) -> None:
    model, rs = _produce(folder)
    _consume(model, rs, folder)


def test_materializers_in_a_pipeline(zenml_client, tmp_path):
    """Both types pass between steps of a real local pipeline run, chosen by ZenML's registry."""
    run = zenml_client.get_pipeline_run(_roundtrip(str(tmp_path / "produced")).id)
    assert run.status == "completed"
    assert run.steps["_consume"].output.load() == 3 + 4
    model_artifact = run.steps["_produce"].outputs["output_0"][0]
    assert model_artifact.type == "ModelArtifact"
    assert model_artifact.materializer.import_path == "materializers.model_folder.ModelFolderMaterializer"
