"""ZenML's Kubeflow orchestrator with every step's Kubernetes pod settings in the KFP pipeline spec.

ZenML 0.98's Kubeflow orchestrator (``zenml.integrations.kubeflow``) compiles a KFP 2 spec whose
tasks carry CPU and memory limits, but of the step's ``pod_settings`` it keeps only a node
selector named ``accelerator`` (as the GPU type, and only when such a selector is set); it warns
that tolerations, volumes and other node selectors "will be ignored", and sets a GPU count only
together with that selector; and its settings class replaces any ``pod_settings`` given in a run
config by one built from the legacy ``node_selectors`` field. GPU pods need all of it: this flavor compiles the same spec through
the same ``submit_pipeline`` and adds, per step, with the ``kfp-kubernetes`` extension:

* the step's ``pod_settings`` as given (:class:`SRPOKubeflowOrchestratorSettings`);
* the order of the steps (ZenML passes components where kfp 2.17 wants tasks: :class:`_StepComponent`);

* ``nvidia.com/gpu`` as accelerator with ``ResourceSettings.gpu_count`` as its count;
* CPU and memory requests equal to the limits (the pod is not evicted before its limit);
* every node selector and toleration of the step's ``pod_settings``;
* each ``emptyDir`` volume (the RAM-backed ``/dev/shm``) and each ``persistentVolumeClaim``
  volume (a shared checkpoint folder) at its ``volume_mounts`` path.

Other volume kinds are refused with an error rather than dropped. ZenML's warning about ignored
pod settings still appears at compile time; what this module adds is in the spec regardless.

Registered by ``bash stacks/register.sh kubeflow`` as the orchestrator flavor ``srpo_kubeflow``;
run configs key its settings as ``orchestrator`` (the same fields as ``orchestrator.kubeflow``; a custom
flavor's key is resolved against the active stack when the run is compiled).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Type

from kfp import dsl
from kfp import kubernetes as kfp_k8s
from pydantic import ValidationInfo, model_validator
from zenml.config import ResourceSettings
from zenml.integrations.kubeflow.flavors import KubeflowOrchestratorFlavor
from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import KubeflowOrchestratorSettings
from zenml.integrations.kubeflow.orchestrators import KubeflowOrchestrator
from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

FLAVOR = "srpo_kubeflow"
GPU_RESOURCE = "nvidia.com/gpu"


def kubernetes_quantity(memory: str) -> str:
    """``ResourceSettings.memory`` ("120GiB", "8GB", "512MiB") as a Kubernetes quantity ("120Gi", "8G")."""
    return memory.replace("iB", "i").removesuffix("B")


def apply_resources(task: dsl.PipelineTask, resources: ResourceSettings) -> None:
    """CPU, memory and GPUs of ``resources`` as the task's requests and limits."""
    if resources.cpu_count:
        cpu = f"{resources.cpu_count:g}"  # 2.0 -> "2", 0.5 -> "0.5"
        task.set_cpu_request(cpu).set_cpu_limit(cpu)
    if resources.memory:
        memory = kubernetes_quantity(resources.memory)
        task.set_memory_request(memory).set_memory_limit(memory)
    if resources.gpu_count:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(resources.gpu_count)


def apply_pod_settings(task: dsl.PipelineTask, pod: KubernetesPodSettings) -> None:
    """Node selectors, tolerations and the emptyDir / PVC volumes of ``pod`` as the task's platform config.

    ``KubernetesPodSettings`` holds tolerations, volumes and mounts as the API's JSON (camelCase dicts).
    """
    for key, value in pod.node_selectors.items():
        kfp_k8s.add_node_selector(task, label_key=key, label_value=value)
    for toleration in pod.tolerations:
        kfp_k8s.add_toleration(task, key=toleration.get("key"), operator=toleration.get("operator"),
                               value=toleration.get("value"), effect=toleration.get("effect"),
                               toleration_seconds=toleration.get("tolerationSeconds"))
    volumes = {volume["name"]: volume for volume in pod.volumes}
    for mount in pod.volume_mounts:
        name, path = mount["name"], mount["mountPath"]
        if name not in volumes:
            raise ValueError(f"pod_settings.volume_mounts: {name!r} names no entry of pod_settings.volumes: "
                             "add the volume or remove the mount")
        volume = volumes[name]
        if "emptyDir" in volume:
            empty_dir = volume["emptyDir"] or {}
            kfp_k8s.empty_dir_mount(task, volume_name=name, mount_path=path, medium=empty_dir.get("medium"),
                                    size_limit=empty_dir.get("sizeLimit"))
        elif "persistentVolumeClaim" in volume:
            kfp_k8s.mount_pvc(task, pvc_name=volume["persistentVolumeClaim"]["claimName"], mount_path=path)
        else:
            kinds = "/".join(sorted(k for k in volume if k != "name"))
            raise ValueError(f"pod_settings.volumes: {name!r} is a {kinds} volume, which the srpo_kubeflow "
                             "orchestrator cannot put into a KFP spec: use emptyDir or persistentVolumeClaim")


class _StepComponent:
    """A step's KFP component that remembers the task it made, so that ``task.after(component)`` works.

    ZenML 0.98's ``submit_pipeline`` orders the tasks with ``task.after(*upstream_components)``,
    passing the *components*; kfp 2.17 accepts only tasks there ("PipelineTask.after() only
    supports PipelineTask and dsl.ExitHandler dependencies. Got ContainerComponent"), so no
    pipeline with two dependent steps compiles. Each task made here maps components to their tasks.
    """

    def __init__(self, component: Any) -> None:
        self.component, self.task = component, None

    def __call__(self) -> dsl.PipelineTask:
        task = self.component()
        ordered_after = task.after
        task.after = lambda *upstream: ordered_after(*(u.task if isinstance(u, _StepComponent) else u
                                                       for u in upstream))
        self.task = task
        return task


class SRPOKubeflowOrchestratorSettings(KubeflowOrchestratorSettings):
    """Kubeflow settings whose ``pod_settings`` are the ones given.

    ZenML 0.98's ``KubeflowOrchestratorSettings`` rebuilds ``pod_settings`` from the legacy
    ``node_selectors`` / ``node_affinity`` fields in a before-validator, so pod settings given in a
    run config are dropped before the orchestrator sees them. The validator of the same name below
    replaces it: it still migrates the legacy fields, but keeps ``pod_settings`` when given.
    """

    @model_validator(mode="before")
    @classmethod
    def _validate_and_migrate_pod_settings(cls, data: Any, info: ValidationInfo) -> Any:
        given = data.get("pod_settings") if isinstance(data, dict) else getattr(data, "pod_settings", None)
        migrated = KubeflowOrchestratorSettings._validate_and_migrate_pod_settings(data, info)
        if given:
            migrated["pod_settings"] = given
        return migrated


class SRPOKubeflowOrchestrator(KubeflowOrchestrator):
    """The Kubeflow orchestrator, with resources and pod settings per step (see the module docstring)."""

    _snapshot: Any = None

    @property
    def settings_class(self) -> Type[SRPOKubeflowOrchestratorSettings]:
        return SRPOKubeflowOrchestratorSettings

    def _create_dynamic_component(self, image, command, arguments, component_name):
        """ZenML's container component for the step, wrapped so that its task can be depended on."""
        return _StepComponent(super()._create_dynamic_component(image, command, arguments, component_name))

    def submit_pipeline(self, snapshot, stack, base_environment, step_environments, placeholder_run=None):
        """ZenML's compile-and-submit, with the snapshot at hand for :meth:`_configure_container_resources`."""
        self._snapshot = snapshot
        try:
            return super().submit_pipeline(snapshot, stack, base_environment, step_environments, placeholder_run)
        finally:
            self._snapshot = None

    def _configure_container_resources(self, dynamic_component: dsl.PipelineTask, resource_settings: ResourceSettings,
                                       node_selector_constraint: Optional[Tuple[str, str]] = None) -> dsl.PipelineTask:
        """Called by ``submit_pipeline`` for each task, after its display name (the step name) is set."""
        step = self._snapshot.step_configurations[dynamic_component._task_spec.display_name]
        apply_resources(dynamic_component, resource_settings)
        pod = self.get_settings(step).pod_settings
        if pod is not None:
            apply_pod_settings(dynamic_component, pod)
        return dynamic_component


class SRPOKubeflowOrchestratorFlavor(KubeflowOrchestratorFlavor):
    """``srpo_kubeflow``: ZenML's Kubeflow orchestrator flavor with :class:`SRPOKubeflowOrchestrator`."""

    @property
    def name(self) -> str:
        return FLAVOR

    @property
    def implementation_class(self) -> Type[SRPOKubeflowOrchestrator]:
        return SRPOKubeflowOrchestrator
