"""The ``local-s3`` stack (stacks/local-s3.yaml) against a real S3 API: moto's server on 127.0.0.1.

The server enforces request signing, so wrong keys fail as on AWS. The stack is registered with
``stacks/register.sh`` into a temporary ZenML config, the tiny ``srpo_training`` runs on it, and
every artifact must be in the bucket and load back.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pytest
from zenml import pipeline, step
from zenml.enums import StackComponentType

from _servers import free_port, isolated_zenml, moto_s3_server, register_stack, reset_zenml, run_tiny
from materializers import model_folder as model_folder_module
from materializers.model_folder import ModelFolderMaterializer
from ops.preflight import ArtifactStoreUnavailable
from srpo.artifacts import ModelFolder, RolloutSet

BUCKET = "srpo-test-artifacts"
EXPECTED_ARTIFACTS = {"train_prompts", "heldout_prompts", "rollouts", "tuned_transformer", "evaluation"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3_server(tmp_path_factory.mktemp("moto")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope="module")
def s3_client(s3, tmp_path_factory):
    """A ZenML client in a temporary config whose active stack is ``srpo-local-s3`` on the moto server."""
    with isolated_zenml(tmp_path_factory.mktemp("zenml-s3")) as env:
        from zenml.client import Client

        Client().create_secret("srpo_s3", values={"aws_access_key_id": s3.key, "aws_secret_access_key": s3.secret})
        result = register_stack("local-s3", env, SRPO_S3_BUCKET=BUCKET, SRPO_S3_ENDPOINT=s3.endpoint)
        assert result.returncode == 0, result.stdout + result.stderr
        client = Client()
        assert client.active_stack_model.name == "srpo-local-s3"
        yield client


@contextmanager
def active_stack(client, name: str):
    previous = client.active_stack_model.name
    client.activate_stack(name)
    try:
        yield
    finally:
        client.activate_stack(previous)
        # ZenML keeps one filesystem per URL scheme: the store created last owns "s3://". Stacks are
        # cached, so switching back in the same process does not re-register the first store.
        client.active_stack.artifact_store._register()


def s3_stack_variant(client, name: str, **configuration) -> str:
    """A stack ``name`` = the local orchestrator + an S3 store on BUCKET with ``configuration`` changes."""
    config = {"path": f"s3://{BUCKET}/zenml", "authentication_secret": "srpo_s3",
              "client_kwargs": {"endpoint_url": "http://127.0.0.1:1", "region_name": "us-east-1"}, **configuration}
    client.create_stack_component(name=name, flavor="s3", component_type=StackComponentType.ARTIFACT_STORE,
                                  configuration=config)
    client.create_stack(name=name, components={StackComponentType.ARTIFACT_STORE: name,
                                               StackComponentType.ORCHESTRATOR: "srpo_local_orchestrator"})
    return name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ end to end

def test_tiny_pipeline_on_s3_stores_every_artifact_in_the_bucket(s3_client, s3, tmp_path):
    run = s3_client.get_pipeline_run(run_tiny(tmp_path, enable_cache=False).id)
    assert run.status == "completed"
    keys = set(s3.keys(BUCKET))

    outputs = {name: versions[0] for st in run.steps.values() for name, versions in st.outputs.items()}
    assert EXPECTED_ARTIFACTS <= set(outputs)
    for name, artifact in outputs.items():
        assert artifact.uri.startswith(f"s3://{BUCKET}/zenml/"), (name, artifact.uri)
        prefix = artifact.uri.removeprefix(f"s3://{BUCKET}/") + "/"
        assert any(k.startswith(prefix) for k in keys), f"{name}: nothing stored under {artifact.uri}"
        assert artifact.load() is not None, name

    # the model folder: manifest plus every file, uncompressed, and a byte-exact copy on load
    tuned = outputs["tuned_transformer"]
    assert tuned.type == "ModelArtifact"
    prefix = tuned.uri.removeprefix(f"s3://{BUCKET}/")
    manifest = json.loads(s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    assert {f"{prefix}/files/{f['path']}" for f in manifest["files"]} <= keys
    folder = tuned.load()
    assert isinstance(folder, ModelFolder)
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        p.relative_to(folder.path).as_posix(): sha256(p) for p in folder.path.rglob("*") if p.is_file()}

    train = outputs["train_prompts"].load()
    rollouts = outputs["rollouts"].load()
    assert isinstance(rollouts, RolloutSet) and rollouts.prompts == train
    assert outputs["evaluation"].load()["prompts"] == outputs["heldout_prompts"].load()
    assert any(k.startswith("zenml/logs/") for k in keys)  # step logs went to the bucket too


def test_model_folder_streams_to_and_from_s3_in_chunks(s3_client, s3, tmp_path, monkeypatch):
    """Nothing reads a whole file into memory: every read asks for at most CHUNK_BYTES."""
    monkeypatch.setattr(model_folder_module, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    reads: list[int] = []
    original = model_folder_module.stream_copy

    class Recording:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

    monkeypatch.setattr(model_folder_module, "stream_copy", lambda src, dst: original(Recording(src), dst))
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "big.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (tmp_path / "m" / "config.json").write_text("{}")
    uri = f"s3://{BUCKET}/zenml/tests/streaming"
    ModelFolderMaterializer(uri=uri).save(ModelFolder(tmp_path / "m"))
    loaded = ModelFolderMaterializer(uri=uri).load(ModelFolder)
    big = Path("sub") / "big.safetensors"
    assert (loaded.path / big).read_bytes() == (tmp_path / "m" / big).read_bytes()
    assert reads and all(0 < n <= 64 * 1024 for n in reads)
    assert len(reads) >= 2 * (1024 // 64)  # the 1 MiB file went up and came back in 64 KiB pieces


def test_credentials_from_the_environment_when_no_secret_is_named(s3_client, s3, tmp_path, monkeypatch):
    """``SRPO_S3_SECRET=`` registers the store without a secret: boto's chain (here the env) supplies keys."""
    from ops.preflight import check_artifact_store

    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    name = s3_stack_variant(s3_client, "s3-env-keys", authentication_secret=None,
                        client_kwargs={"endpoint_url": s3.endpoint, "region_name": "us-east-1"})
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.safetensors").write_bytes(b"\x00" * 1000)
    with active_stack(s3_client, name):
        assert s3_client.active_stack.artifact_store.config.authentication_secret is None
        check_artifact_store()
        uri = f"s3://{BUCKET}/zenml/tests/env-keys"
        ModelFolderMaterializer(uri=uri).save(ModelFolder(tmp_path / "m"))
        assert (ModelFolderMaterializer(uri=uri).load(ModelFolder).path / "w.safetensors").stat().st_size == 1000
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        with pytest.raises(ArtifactStoreUnavailable, match="AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
            check_artifact_store()


# ----------------------------------------------------------------------------------- bad input

def test_endpoint_down_fails_before_the_run_with_the_fix(s3_client, tmp_path, monkeypatch):
    from botocore.endpoint import Endpoint

    runs_before = s3_client.list_pipeline_runs().total
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sent = []  # every HTTP attempt botocore makes: the check fails at once, without retries
    send = Endpoint._send
    monkeypatch.setattr(Endpoint, "_send", lambda self, request: sent.append(request.url) or send(self, request))
    with active_stack(s3_client, s3_stack_variant(s3_client, "s3-down", client_kwargs={"endpoint_url": down})):
        sent.clear()
        with pytest.raises(ArtifactStoreUnavailable, match=r"cannot be reached.*zenml artifact-store update s3-down"):
            run_tiny(tmp_path, enable_cache=False)
    # one check, one request and at most one retry (botocore's default legacy mode reads max_attempts: 1 as one
    # retry), all to the endpoint that is down: no retry loop (its default makes 5 attempts, s3fs's ~20 s of them)
    assert 1 <= len(sent) <= 2 and all(url.startswith(down) for url in sent), sent
    assert s3_client.list_pipeline_runs().total == runs_before  # no run was created


def test_wrong_or_missing_credentials_fail_before_the_run_with_the_fix(s3_client, s3, tmp_path):
    endpoint = {"endpoint_url": s3.endpoint, "region_name": "us-east-1"}
    s3_client.create_secret("srpo_s3_wrong", values={"aws_access_key_id": "AKIAWRONGWRONGWRONG0",
                                                     "aws_secret_access_key": "wrong"})
    runs_before = s3_client.list_pipeline_runs().total
    with active_stack(s3_client, s3_stack_variant(s3_client, "s3-wrong-keys", client_kwargs=endpoint,
                                              authentication_secret="srpo_s3_wrong")):
        with pytest.raises(ArtifactStoreUnavailable,
                           match=r"refused the credentials \(InvalidAccessKeyId.*zenml secret update srpo_s3_wrong"):
            run_tiny(tmp_path, enable_cache=False)

    s3_client.create_secret("srpo_s3_bad_secret", values={"aws_access_key_id": s3.key,
                                                          "aws_secret_access_key": "not-the-secret"})
    with active_stack(s3_client, s3_stack_variant(s3_client, "s3-bad-secret", client_kwargs=endpoint,
                                              authentication_secret="srpo_s3_bad_secret")):
        with pytest.raises(ArtifactStoreUnavailable, match=r"SignatureDoesNotMatch"):
            run_tiny(tmp_path, enable_cache=False)

    with active_stack(s3_client, s3_stack_variant(s3_client, "s3-no-secret", client_kwargs=endpoint,
                                              authentication_secret="no_such_secret")):
        with pytest.raises(ArtifactStoreUnavailable, match=r"zenml secret create no_such_secret"):
            run_tiny(tmp_path, enable_cache=False)

    with active_stack(s3_client, s3_stack_variant(s3_client, "s3-no-bucket", client_kwargs=endpoint,
                                              path="s3://no-such-bucket/zenml")):
        with pytest.raises(ArtifactStoreUnavailable, match=r"bucket 'no-such-bucket' does not exist"):
            run_tiny(tmp_path, enable_cache=False)
    assert s3_client.list_pipeline_runs().total == runs_before


# ------------------------------------------------------------------------- failure mid-upload

@step
def _write_model(folder: str) -> Annotated[ModelFolder, "partial_model"]:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("a.safetensors", "b.safetensors", "c.json"):
        (root / name).write_bytes(name.encode() * 1000)
    return ModelFolder(root)


@pipeline(enable_cache=False, model=None)
def _upload_model(folder: str) -> None:
    _write_model(folder)


def test_a_step_failing_mid_upload_leaves_no_completed_artifact(s3_client, s3, tmp_path, monkeypatch):
    """The connection drops after the first model file reached S3. While it is half-uploaded the
    artifact cannot be loaded (no manifest yet); then the step fails, ZenML registers no artifact
    version and removes the partial upload from the bucket."""
    original, seen = model_folder_module.stream_copy, {}
    prefix = "zenml/_write_model/partial_model/"

    def flaky(src, dst):
        if "b.safetensors" in str(getattr(dst, "path", "")):
            seen["keys"] = s3.keys(BUCKET, prefix)
            uri = f"s3://{BUCKET}/" + seen["keys"][0].rsplit("/files/", 1)[0]
            try:
                ModelFolderMaterializer(uri=uri).load(ModelFolder)
            except FileNotFoundError as err:
                seen["load_error"] = str(err)
            raise ConnectionResetError("simulated: the connection to S3 dropped mid-upload")
        return original(src, dst)

    monkeypatch.setattr(model_folder_module, "stream_copy", flaky)
    with pytest.raises(RuntimeError, match="_write_model"):
        _upload_model(str(tmp_path / "model"))
    monkeypatch.undo()

    assert [k.rsplit("/files/", 1)[1] for k in seen["keys"]] == ["a.safetensors"]  # it failed half-way
    assert "was not saved completely" in seen["load_error"]
    run = s3_client.list_pipeline_runs(sort_by="desc:created", size=1).items[0]
    assert run.status == "failed" and run.steps["_write_model"].status == "failed"
    assert not s3_client.list_artifact_versions(artifact="partial_model").items
    assert not s3.keys(BUCKET, prefix)  # ZenML removed the failed step's output folder


def test_register_script_reports_an_existing_stack(s3_client, s3):
    reset_zenml()
    import os

    result = register_stack("local-s3", dict(os.environ), SRPO_S3_BUCKET=BUCKET, SRPO_S3_ENDPOINT=s3.endpoint)
    assert result.returncode == 3 and "already registered" in result.stderr
