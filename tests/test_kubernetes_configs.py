"""The ``k8s-gpu`` stack and the Kubernetes run configs, as far as a machine without a cluster allows.

A fake kubeconfig (a context named ``srpo-gpu`` pointing at 127.0.0.1, never contacted) lets
ZenML register the stack, run its stack validation, compile the configs against it, compute the
Docker builds and render the step operator's pod manifest with its own manifest builder. Nothing
here talks to a Kubernetes API or builds an image.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from _servers import isolated_zenml, register_stack

K8S_CONFIGS = [Path("configs/k8s_flux_hps.yaml"), Path("configs/k8s_weekly_retrain.yaml")]
GPU_STEPS = ("generate_rollouts", "train_srpo", "evaluate")
STEP_OPERATOR = "srpo_k8s_gpu"
CONTEXT = "srpo-gpu"

KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}
contexts:
- name: {CONTEXT}
  context: {{cluster: fake, user: fake, namespace: srpo}}
current-context: {CONTEXT}
users:
- name: fake
  user: {{token: fake-token-for-tests}}
"""
STACK_VARIABLES = {"SRPO_K8S_CONTEXT": CONTEXT, "SRPO_S3_BUCKET": "srpo-k8s-test",
                   "SRPO_REGISTRY_URI": "registry.example.com/srpo"}


def use_kubeconfig(mp: pytest.MonkeyPatch, path: Path) -> None:
    """KUBECONFIG for subprocesses, and for this process (the kubernetes client reads it at import)."""
    from kubernetes.config import kube_config

    mp.setenv("KUBECONFIG", str(path))
    mp.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def client_on_registered_stack(root: Path, stack: str, variables: dict[str, str]):
    """Yield a ZenML client in ``root`` whose active stack is ``srpo-<stack>``, registered by stacks/register.sh
    against the fake kubeconfig."""
    (root / "kubeconfig").write_text(KUBECONFIG)
    with pytest.MonkeyPatch.context() as mp:
        use_kubeconfig(mp, root / "kubeconfig")
        with isolated_zenml(root / "zenml") as env:
            from zenml.client import Client

            Client()  # create the config and its default stack first
            result = register_stack(stack, env, **variables)
            assert result.returncode == 0, result.stdout + result.stderr
            client = Client()
            assert client.active_stack_model.name == f"srpo-{stack}"
            yield client


@pytest.fixture(scope="module")
def k8s_client(tmp_path_factory):
    """A ZenML client whose active stack is ``srpo-k8s-gpu``, registered by stacks/register.sh."""
    yield from client_on_registered_stack(tmp_path_factory.mktemp("k8s"), "k8s-gpu", STACK_VARIABLES)


@pytest.fixture
def compiled(k8s_client, monkeypatch):
    """Compile a config with ZenML's own compiler against the active k8s stack (no S3 check: no S3 here)."""
    import pipelines.training as training

    monkeypatch.setattr(training, "check_artifact_store", lambda: None)

    def compile_config(path: Path):
        pipeline = training.srpo_training.with_options(config_path=str(path))
        pipeline.prepare()
        snapshot, schedule, _ = pipeline._compile(config_path=str(path))
        return snapshot, schedule

    return compile_config


def test_stack_validates_with_the_fake_kubeconfig_and_names_a_missing_context(k8s_client, tmp_path, monkeypatch):
    from zenml.exceptions import StackValidationError

    stack = k8s_client.active_stack
    stack.validate()
    assert (stack.orchestrator.flavor, stack.step_operator.flavor, stack.artifact_store.flavor,
            stack.image_builder.flavor, stack.container_registry.flavor) == (
        "kubernetes", "kubernetes", "s3", "kaniko", "default")
    assert stack.orchestrator.config.is_schedulable and not stack.orchestrator.config.is_local
    assert stack.step_operator.name == STEP_OPERATOR

    (tmp_path / "other").write_text(KUBECONFIG.replace(CONTEXT, "someone-else"))
    use_kubeconfig(monkeypatch, tmp_path / "other")
    with pytest.raises(StackValidationError, match=f"could not find a Kubernetes context named '{CONTEXT}'"):
        stack.validate()


def test_register_script_names_a_missing_variable(k8s_client):
    env = {k: v for k, v in os.environ.items() if k != "SRPO_REGISTRY_URI"}
    variables = {k: v for k, v in STACK_VARIABLES.items() if k != "SRPO_REGISTRY_URI"}
    result = register_stack("k8s-gpu", env, **variables)
    assert result.returncode == 2 and "needs $SRPO_REGISTRY_URI" in result.stderr


@pytest.mark.parametrize("path", K8S_CONFIGS, ids=lambda p: p.name)
def test_gpu_steps_run_on_the_step_operator_with_gpus_node_placement_and_shm(compiled, path):
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings

    snapshot, _ = compiled(path)
    steps = snapshot.step_configurations
    assert steps["prepare_prompts"].config.step_operator is None  # CPU work stays on the orchestrator's pods
    for name in GPU_STEPS:
        config = steps[name].config
        assert config.step_operator == STEP_OPERATOR, name
        resources = config.resource_settings
        assert resources.gpu_count >= 1 and resources.cpu_count and resources.memory, name
        settings = KubernetesStepOperatorSettings.model_validate(
            config.settings[f"step_operator:{STEP_OPERATOR}"].model_dump())
        pod = settings.pod_settings
        assert pod.node_selectors.get("nvidia.com/gpu.product"), name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod.tolerations
        shm = {v["name"]: v for v in pod.volumes}["dshm"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in pod.volume_mounts
        # the pod's own request repeats ResourceSettings (ZenML 0.98 applies those only via resource pools)
        assert pod.resources["limits"]["nvidia.com/gpu"] == str(resources.gpu_count)
        assert pod.resources["requests"]["nvidia.com/gpu"] == str(resources.gpu_count)
        assert pod.resources["requests"]["cpu"] == str(int(resources.cpu_count))
        assert pod.resources["requests"]["memory"] == resources.memory.replace("GiB", "Gi")
    # the trainer runs one process per GPU of its pod (accelerate launch inside the step)
    train = steps["train_srpo"].config
    assert train.parameters["train"]["num_processes"] == train.resource_settings.gpu_count == 8


@pytest.mark.parametrize("path", K8S_CONFIGS, ids=lambda p: p.name)
def test_the_step_operator_pod_manifest_zenml_would_submit(compiled, path):
    """Render the pod with the functions KubernetesStepOperator.submit_with_allocation uses."""
    from zenml.integrations.kubernetes import kube_utils
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings
    from zenml.integrations.kubernetes.manifest_utils import build_pod_manifest

    snapshot, _ = compiled(path)
    config = snapshot.step_configurations["train_srpo"].config
    settings = KubernetesStepOperatorSettings.model_validate(
        config.settings[f"step_operator:{STEP_OPERATOR}"].model_dump())
    pod_settings = kube_utils.apply_resource_request_allocations_to_pod_settings(None, settings.pod_settings)
    pod_settings = kube_utils.apply_default_resource_requests(memory="400Mi", pod_settings=pod_settings)
    pod = build_pod_manifest(pod_name=None, image_name="registry.example.com/srpo:test",
                             command=["python", "-m", "zenml.entrypoints.step_entrypoint"], args=[],
                             privileged=False, pod_settings=pod_settings, env={"A": "1"})
    from kubernetes.client import ApiClient

    spec = ApiClient().sanitize_for_serialization(pod)["spec"]  # the JSON the API server would get
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["requests"]["memory"] == "900Gi"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in spec["volumes"]
    assert settings.active_deadline_seconds and settings.pod_count == 1


@pytest.mark.parametrize("path", K8S_CONFIGS, ids=lambda p: p.name)
def test_one_cuda_pytorch_image_with_the_project_installed(k8s_client, compiled, path):
    from zenml.utils.pipeline_docker_image_builder import PipelineDockerImageBuilder

    snapshot, _ = compiled(path)
    docker = snapshot.pipeline_configuration.docker_settings
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-(runtime|devel)", docker.parent_image)
    assert docker.environment["SRPO_CACHE"] and docker.environment["HF_HOME"]

    builds = k8s_client.active_stack.get_docker_builds(snapshot)
    assert {b.step_name for b in builds if b.key == "kubernetes_step_operator"} == set(GPU_STEPS)
    assert "orchestrator" in {b.key for b in builds}
    assert all(b.settings.parent_image == docker.parent_image for b in builds)

    requirements = PipelineDockerImageBuilder.gather_requirements_files(docker, k8s_client.active_stack, log=False)
    required = "\n".join(content for _, content, _ in requirements)
    assert "kubernetes" in required and "s3fs" in required  # the stack's integrations go into the image
    dockerfile = PipelineDockerImageBuilder._generate_zenml_pipeline_dockerfile(
        parent_image=docker.parent_image, docker_settings=docker, requirements_files=requirements,
        apt_packages=docker.apt_packages)
    lines = dockerfile.splitlines()
    assert lines[0] == f"FROM {docker.parent_image}"
    assert lines.index("COPY . .") < lines.index(f"RUN {docker.local_project_install_command}")
    assert "-e ." in docker.local_project_install_command
    ignored = Path(".dockerignore").read_text().split()
    assert ".venv/" in ignored and ".git/" in ignored  # the build context stays small


def test_weekly_schedule_is_a_cron_the_kubernetes_orchestrator_takes(compiled):
    snapshot, schedule = compiled(Path("configs/k8s_weekly_retrain.yaml"))
    assert schedule is not None and schedule.cron_expression == "0 3 * * 1"  # Mondays 03:00
    assert snapshot.pipeline_configuration.enable_cache is False
    orchestrator = snapshot.pipeline_configuration.settings["orchestrator:srpo_k8s_orchestrator"]
    assert orchestrator.model_dump()["concurrency_policy"] == "Forbid"


def test_k8s_configs_keep_the_papers_parameters_and_the_same_placement():
    load = lambda p: yaml.safe_load(Path(p).read_text())  # noqa: E731
    reference, k8s, weekly = load("configs/flux_hps.yaml"), load(K8S_CONFIGS[0]), load(K8S_CONFIGS[1])
    weekly_params = {k: v for k, v in weekly["parameters"].items() if k != "promotion"}  # the weekly run promotes
    assert "promotion" in weekly["parameters"] and k8s["parameters"] == weekly_params
    scale = {"num_processes", "distributed"}  # how many GPUs, not what is trained
    k8s_train = {k: v for k, v in k8s["parameters"]["train"].items() if k not in scale}
    reference_train = {k: v for k, v in reference["parameters"]["train"].items() if k not in scale}
    assert {**k8s["parameters"], "train": k8s_train} == {**reference["parameters"], "train": reference_train}
    assert k8s["model"] == reference["model"] == weekly["model"]
    assert k8s["steps"] == weekly["steps"]
    assert k8s["settings"]["docker"] == weekly["settings"]["docker"]


def test_docs_name_the_multi_pod_environment_zenml_sets():
    """docs/kubernetes.md's multi-node launch uses the variables ZenML's Indexed Job really sets."""
    from zenml.integrations.kubernetes import kube_utils

    env = kube_utils.multi_pod_environment(job_name="srpo-train", namespace="srpo", pod_count=4)
    docs = Path("docs/kubernetes.md").read_text()
    for name in env:
        assert f"${name}" in docs or f"${{{name}}}" in docs, name
    assert env["ZENML_KUBERNETES_MAIN_ADDRESS"] == "srpo-train-0.srpo-train.srpo.svc"
    assert "JOB_COMPLETION_INDEX" in docs
