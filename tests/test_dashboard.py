"""The local ZenML dashboard server (``zenml login --local``) and lineage through the Model Control Plane.

The server is started on 127.0.0.1 and a free port in a temporary ZenML config, the tiny
``srpo_training`` runs against it (this process talks to it over REST), and the run, its
artifacts and the model version are read back through a fresh client and through the CLI
commands the README shows. ``zenml logout --local`` stops the server afterwards.
"""

from __future__ import annotations

import json

import pytest

from _servers import TINY_SMALLER, isolated_zenml, local_zenml_server, reset_zenml, run_tiny, zenml_cli


@pytest.fixture
def dashboard(tmp_path):
    with isolated_zenml(tmp_path / "zenml") as env:
        with local_zenml_server(env) as url:
            yield url, env


def test_tiny_pipeline_against_the_local_dashboard_server_and_its_lineage(dashboard, tmp_path):
    from zenml.client import Client

    from ops.lineage import trace

    url, env = dashboard
    client = Client()
    assert client.zen_store.type.value == "rest" and client.zen_store.url == url
    run_id = run_tiny(tmp_path, enable_cache=False).id

    reset_zenml()  # read everything back through a fresh client, i.e. from the server
    client = Client()
    run = client.get_pipeline_run(run_id)
    assert run.status == "completed"
    assert {"prepare_prompts", "generate_rollouts", "train_srpo", "evaluate"} <= set(run.steps)
    train_prompts = run.steps["prepare_prompts"].outputs["train_prompts"][0].load()
    assert run.steps["generate_rollouts"].outputs["rollouts"][0].load().prompts == train_prompts
    tuned = run.steps["train_srpo"].outputs["tuned_transformer"][0]
    assert tuned.type == "ModelArtifact" and (tuned.load().path / "config.json").is_file()
    evaluation = run.steps["evaluate"].outputs["evaluation"][0].load()

    # the run carries a version of the config's Model, with its tags, numbers and MODEL artifact
    model_version = run.model_version
    assert model_version.model.name == "srpo-tiny-cpu"
    assert {"srpo", "tiny", "cpu", "clip"} <= {t.name for t in model_version.tags}
    assert model_version.get_model_artifact("tuned_transformer").id == tuned.id
    assert model_version.run_metadata["delta_reward"] == pytest.approx(evaluation["deltas"]["delta_reward"])

    lineage = trace("srpo-tiny-cpu")
    assert [s.step for s in lineage.steps] == ["train_srpo", "generate_rollouts", "prepare_prompts"]
    assert lineage.step("prepare_prompts").parameters["config"]["source"] == "data/prompts/tiny.txt"
    assert lineage.step("train_srpo").parameters["train"]["steps"] == TINY_SMALLER["train"]["steps"]
    assert "rollouts" in lineage.step("train_srpo").inputs
    assert "train_prompts" in lineage.step("generate_rollouts").inputs

    # the README's CLI trace works against the server
    links = json.loads(zenml_cli("model", "model_artifacts", "srpo-tiny-cpu", "-v", str(model_version.number),
                                 "-c", "artifact_version", "-o", "json", env=env).stdout)["items"]
    assert [link["artifact_version"] for link in links] == ["tuned_transformer"]
    runs = json.loads(zenml_cli("model", "runs", "srpo-tiny-cpu", "-v", str(model_version.number), "-o", "json",
                                env=env).stdout)
    assert run.name in json.dumps(runs)
