"""Run a training job on several nodes: where each pod of a multi-pod command step stands, and its torchrun.

ZenML's Kubernetes step operator runs a command step with ``pod_count > 1`` as an Indexed Job
behind a headless service. Every pod runs the same command; this module turns the variables it
finds there into one ``torchrun`` per pod, of ``python -m ops.train`` processes:

=================================  ==================================  ===================
variable                           set by                              torchrun flag
=================================  ==================================  ===================
``ZENML_KUBERNETES_POD_COUNT``     ZenML (``multi_pod_environment``)   ``--nnodes``
``JOB_COMPLETION_INDEX``           Kubernetes (Indexed Jobs)           ``--node-rank``
``ZENML_KUBERNETES_MAIN_ADDRESS``  ZenML: pod 0's DNS name             ``--master-addr``
``ZENML_KUBERNETES_MAIN_PORT``     ZenML: 29500                        ``--master-port``
=================================  ==================================  ===================

    python -m ops.multinode WORK_DIR [--nproc-per-node N]    # the entry point (ops/multinode.py)

``WORK_DIR`` (default ``$SRPO_MULTINODE_DIR``) is a folder every pod mounts at the same path
(a ReadWriteMany volume): ``WORK_DIR/job`` is the job (:func:`srpo.training.job.write_job`),
``WORK_DIR/out`` receives the result (written by global rank 0). The job's ``checkpoint_dir``
must lie on that volume too: running the same command again on every pod resumes from the
newest checkpoint, and a pod that cannot read the checkpoint the main process chose stops with
an error saying so (:meth:`srpo.training.checkpoint.Checkpointer.find`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

POD_COUNT = "ZENML_KUBERNETES_POD_COUNT"
POD_INDEX = "JOB_COMPLETION_INDEX"
MAIN_ADDRESS = "ZENML_KUBERNETES_MAIN_ADDRESS"
MAIN_PORT = "ZENML_KUBERNETES_MAIN_PORT"
WORK_DIR = "SRPO_MULTINODE_DIR"
NPROC_PER_NODE = "SRPO_NPROC_PER_NODE"


@dataclass(frozen=True)
class PodPlace:
    """Where this pod stands in the job: ``index`` of ``count`` pods, pod 0 at ``address:port``."""

    count: int
    index: int
    address: str
    port: int


def _integer(env: dict[str, str], name: str, default: str | None = None) -> int:
    value = env.get(name, default)
    if value is None:
        raise ValueError(f"{name} is not set: this command runs in a pod of a multi-pod step (the Kubernetes "
                         f"step operator's pod_count > 1 sets it); outside one, set {POD_COUNT}, {POD_INDEX}, "
                         f"{MAIN_ADDRESS} and {MAIN_PORT} yourself")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} is {value!r}, not a whole number: fix the pod's environment") from None


def pod_place(env: dict[str, str] | None = None) -> PodPlace:
    """Read the multi-pod variables; one pod (``count`` 1, index 0, 127.0.0.1:29500) when none are set."""
    env = dict(os.environ if env is None else env)
    count = _integer(env, POD_COUNT, "1")
    single = count == 1
    index = _integer(env, POD_INDEX, "0" if single else None)
    port = _integer(env, MAIN_PORT, "29500" if single else None)
    address = env.get(MAIN_ADDRESS, "127.0.0.1" if single else None)
    if address is None:
        raise ValueError(f"{MAIN_ADDRESS} is not set but {POD_COUNT} is {count}: every pod needs pod 0's address "
                         "(ZenML sets it for a multi-pod step)")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"{POD_INDEX} is {index} with {POD_COUNT} {count}: the index must lie in 0..{count - 1}")
    return PodPlace(count=count, index=index, address=address, port=port)


def check_world(train, nodes: int | None, nproc_per_node: int) -> None:
    """Refuse a launch whose nodes or processes per node differ from the ``train.num_nodes`` and
    ``train.num_processes`` the memory plan shards over (FSDP world = their product); ``nodes`` None: not known yet."""
    if nproc_per_node != train.num_processes:
        raise ValueError(f"train.num_processes = {train.num_processes} but {nproc_per_node} processes run per node "
                         f"(nproc_per_node): set train.num_processes: {nproc_per_node}, the world the plan shards over")
    if nodes is not None and nodes != train.num_nodes:
        raise ValueError(f"train.num_nodes = {train.num_nodes} but the job runs on {nodes} pods ({POD_COUNT}): set "
                         f"train.num_nodes: {nodes} (the step's pod_count)")


def torchrun_command(place: PodPlace, work_dir: str | Path, nproc_per_node: int, entry: str) -> list[str]:
    """The ``torchrun`` command for this pod: ``nproc_per_node`` processes of module ``entry`` (``ops.train``)."""
    work_dir = Path(work_dir)
    return [sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(place.count), "--node-rank", str(place.index), "--nproc-per-node", str(nproc_per_node),
            "--master-addr", place.address, "--master-port", str(place.port),
            "-m", entry, str(work_dir / "job"), str(work_dir / "out")]
