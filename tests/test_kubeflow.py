"""The ``kubeflow`` stack: ``srpo_training`` compiled into the Kubeflow Pipelines spec ZenML would submit.

``stacks/register.sh kubeflow`` registers the stack (with the ``srpo_kubeflow`` flavor) against a
fake kubeconfig (never contacted). The snapshot is made by ZenML's own ``_create_snapshot`` with a
prebuilt image (a ``PipelineBuildBase`` naming it, so no Docker build runs), and the
orchestrator's own ``run`` -> ``submit_pipeline`` compiles the KFP spec; only the last call, which
uploads the written file to the Kubeflow API (``_upload_and_run_pipeline``), is replaced by one
that keeps the file. The spec is read back with the KFP SDK's loader.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from test_kubernetes_configs import CONTEXT, client_on_registered_stack

KUBEFLOW_CONFIGS = [Path("configs/kubeflow_flux_hps.yaml"), Path("configs/kubeflow_weekly_retrain.yaml")]
IMAGE = "registry.example.com/srpo:prebuilt"
GPU_STEPS = {"generate_rollouts": 1, "train_srpo": 8, "evaluate": 1}
STACK_VARIABLES = {"SRPO_K8S_CONTEXT": CONTEXT, "SRPO_S3_BUCKET": "srpo-kubeflow-test",
                   "SRPO_REGISTRY_URI": "registry.example.com/srpo"}


@pytest.fixture(scope="module")
def kubeflow_client(tmp_path_factory):
    """A ZenML client whose active stack is ``srpo-kubeflow``, registered by stacks/register.sh."""
    yield from client_on_registered_stack(tmp_path_factory.mktemp("kubeflow"), "kubeflow", STACK_VARIABLES)


def frame_names() -> list[tuple]:
    """``inspect.stack()`` of the caller without file look-ups: (frame, None, None, function name) per frame."""
    frames, frame = [], sys._getframe(1)
    while frame is not None:
        frames.append((frame, None, None, frame.f_code.co_name))
        frame = frame.f_back
    return frames


@pytest.fixture
def compile_spec(kubeflow_client, monkeypatch):
    """Compile a run config as the orchestrator does before it submits; returns (snapshot, loaded spec)."""
    import pipelines.training as training
    from kfp import components
    from kfp.dsl import pipeline_task
    from zenml.models import BuildItem
    from zenml.models import PipelineBuildBase

    monkeypatch.setattr(training, "check_artifact_store", lambda: None)  # no S3 here
    # kfp reads its caller's name for an error message from inspect.stack()[1][3], ~300 times a compile:
    # every frame's file and source lines, each found by a scan of sys.modules (10-50 s with torch loaded).
    # The frames' function names are all it reads.
    monkeypatch.setattr(pipeline_task, "inspect", SimpleNamespace(stack=frame_names))
    orchestrator = kubeflow_client.active_stack.orchestrator
    written = {}

    def keep_instead_of_upload(self, snapshot, pipeline_file_path, run_name):
        written.update(path=pipeline_file_path, run_name=run_name)

    monkeypatch.setattr(type(orchestrator), "_upload_and_run_pipeline", keep_instead_of_upload)

    def compile_config(path: Path):
        import platform

        from zenml import __version__

        build = PipelineBuildBase(images={"orchestrator": BuildItem(image=IMAGE, contains_code=True)},
                                  is_local=False, contains_code=True, zenml_version=__version__,
                                  python_version=platform.python_version())
        pipeline = training.srpo_training.with_options(config_path=str(path))
        pipeline.prepare()
        snapshot = pipeline._create_snapshot(config_path=str(path), build=build)
        stack = kubeflow_client.active_stack
        stack.orchestrator.run(snapshot=snapshot, stack=stack)
        return snapshot, components.load_component_from_file(written["path"])

    return compile_config


def executors(component) -> dict[str, dict]:
    """Each step's container (image, command, args, resources), upstream steps and Kubernetes config
    (node selector, tolerations, volumes; the platform spec), by step name."""
    from google.protobuf import json_format

    spec = json_format.MessageToDict(component.pipeline_spec)
    platform = json_format.MessageToDict(component.platform_spec).get("platforms", {})
    kubernetes = platform.get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    tasks = spec["root"]["dag"]["tasks"]
    names = {key: t["taskInfo"]["name"] for key, t in tasks.items()}  # the DAG's keys are the names with "-"
    steps = {}
    for key, task in tasks.items():
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        steps[names[key]] = {**spec["deploymentSpec"]["executors"][executor]["container"],
                             "after": {names[d] for d in task.get("dependentTasks", [])},
                             "kubernetes": kubernetes.get(executor)}
    return steps


def check_every_step(snapshot, component) -> None:
    from zenml.entrypoints.step_entrypoint_configuration import StepEntrypointConfiguration

    steps = executors(component)
    assert set(steps) == set(snapshot.step_configurations)  # every step of srpo_training, nothing else
    for name, container in steps.items():
        assert container["image"] == IMAGE, name
        assert container["command"] == StepEntrypointConfiguration.get_entrypoint_command(), name
        assert container["args"][container["args"].index("--step_name") + 1] == name
        assert container["after"] == set(snapshot.step_configurations[name].spec.upstream_steps), name
        resources = container["resources"]
        if name in GPU_STEPS:
            accelerator = resources["accelerator"]
            assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", str(GPU_STEPS[name]))
            assert resources["resourceMemoryLimit"] == resources["resourceMemoryRequest"] == (
                "900Gi" if name == "train_srpo" else "120Gi")
            assert resources["resourceCpuLimit"] == resources["resourceCpuRequest"] == (
                "64" if name == "train_srpo" else "8")
            config = container["kubernetes"]
            assert config["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in config["tolerations"]
            shm = {m["volumeName"]: m for m in config["emptyDirMounts"]}["dshm"]
            assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
            assert shm["sizeLimit"] == ("64Gi" if name == "train_srpo" else "16Gi")
        else:  # CPU steps: the pipeline-wide resources, no GPU, no GPU-node placement
            assert "accelerator" not in resources and container["kubernetes"] is None
            assert resources["resourceMemoryLimit"] == "8Gi" and resources["resourceCpuLimit"] == "2"
    train = snapshot.step_configurations["train_srpo"].config
    assert train.parameters["train"]["num_processes"] == GPU_STEPS["train_srpo"]  # one process per GPU


def test_srpo_training_compiles_to_a_kfp_spec_with_every_step_placed_on_its_pod(kubeflow_client, compile_spec):
    stack = kubeflow_client.active_stack
    assert (stack.orchestrator.flavor, stack.step_operator.flavor, stack.artifact_store.flavor,
            stack.image_builder.flavor) == ("srpo_kubeflow", "kubernetes", "s3", "kaniko")
    snapshot, component = compile_spec(KUBEFLOW_CONFIGS[0])
    assert snapshot.schedule is None
    check_every_step(snapshot, component)


def test_weekly_schedule_compiles_the_same_spec_for_a_recurring_run(kubeflow_client, compile_spec):
    from zenml.integrations.kubeflow.orchestrators.kubeflow_orchestrator import KubeflowOrchestrator

    snapshot, component = compile_spec(KUBEFLOW_CONFIGS[1])
    check_every_step(snapshot, component)
    schedule = snapshot.schedule  # what _upload_and_run_pipeline hands to kfp's create_recurring_run
    assert schedule.cron_expression == "0 0 3 * * 1" and len(schedule.cron_expression.split()) == 6
    assert schedule.catchup is False and schedule.interval_second is None  # no_catchup=True, a cron only
    assert snapshot.pipeline_configuration.enable_cache is False
    assert [s.name for s in kubeflow_client.list_schedules()] == ["srpo-flux-hps-kubeflow-weekly"]
    assert "create_recurring_run" in Path(KubeflowOrchestrator._upload_and_run_pipeline.__code__.co_filename).read_text()


def test_kubeflow_configs_keep_the_k8s_parameters_and_one_placement():
    load = lambda p: yaml.safe_load(Path(p).read_text())  # noqa: E731
    k8s, kubeflow, weekly = load("configs/k8s_flux_hps.yaml"), load(KUBEFLOW_CONFIGS[0]), load(KUBEFLOW_CONFIGS[1])
    promoting = {k: v for k, v in weekly["parameters"].items() if k != "promotion"}  # the weekly run promotes
    assert "promotion" in weekly["parameters"] and kubeflow["parameters"] == promoting == k8s["parameters"]
    assert kubeflow["steps"] == weekly["steps"] and kubeflow["settings"] == weekly["settings"]
    assert kubeflow["settings"]["docker"] == k8s["settings"]["docker"]
    assert kubeflow["model"] == k8s["model"] == weekly["model"]


def test_a_volume_kfp_cannot_mount_is_refused_not_dropped():
    from kfp import dsl
    from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

    from flavors.kubeflow import apply_pod_settings

    @dsl.container_component
    def step():  # kfp reads the return annotation, which this module's `annotations` import makes a string
        return dsl.ContainerSpec(image=IMAGE, command=["true"])

    @dsl.pipeline
    def one():
        pod = KubernetesPodSettings(volumes=[{"name": "data", "hostPath": {"path": "/data"}}],
                                    volume_mounts=[{"name": "data", "mountPath": "/data"}])
        with pytest.raises(ValueError, match=r"^pod_settings.volumes: 'data' is a hostPath volume.*emptyDir or "
                                             r"persistentVolumeClaim"):
            apply_pod_settings(step(), pod)
