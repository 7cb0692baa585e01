"""Two "pods" on 127.0.0.1: ``python -m ops.multinode`` as a multi-pod command step runs it.

Each pod is a process group of its own, started in a folder of its own (its local disk) with the
variables ZenML's Kubernetes step operator and Kubernetes set on the pods of an Indexed Job. The
job's ``checkpoint_dir`` is relative, so each pod resolves it on its own disk; a symlink to pod 0's
folder stands for the shared volume. Training runs over gloo on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._servers import free_port, stop_process
from srpo.config import TrainConfig
from srpo.training import multinode
from srpo.training.job import run_job, write_job
from test_resume_and_scale import REWARD, ROLLOUT, max_abs_diff, transformer_weights

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4
CHECKPOINTS = "checkpoints"  # relative: each pod resolves it in its own working folder


def train_cfg(batch_size: int, checkpoint_dir: str, num_nodes: int = 1) -> TrainConfig:
    return TrainConfig(steps=STEPS, batch_size=batch_size, learning_rate=1e-3, max_grad_norm=1.0, num_injections=2,
                       checkpoint_every=1, keep_checkpoints=2, checkpoint_dir=checkpoint_dir, num_nodes=num_nodes)


def pods_layout(root: Path, policy_cfg, rollouts, shared: bool = True) -> tuple[Path, list[Path]]:
    """``root/work/job`` (the job on the shared volume) and the pods' working folders.

    ``shared``: pod 1's ``checkpoints`` is pod 0's (a shared volume); else pod 1 has a disk of its own.
    """
    work = root / "work"
    write_job(work / "job", policy_cfg, REWARD, ROLLOUT, train_cfg(1, CHECKPOINTS, num_nodes=2), rollouts)
    pods = [root / "pod0", root / "pod1"]
    for pod in pods:
        pod.mkdir()
    (pods[0] / CHECKPOINTS).mkdir()
    if shared:
        (pods[1] / CHECKPOINTS).symlink_to(pods[0] / CHECKPOINTS, target_is_directory=True)
    return work, pods


def start_pod(index: int, cwd: Path, work: Path, port: int) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # the pod's cwd is its own
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path,
           multinode.POD_COUNT: "2", multinode.POD_INDEX: str(index),
           multinode.MAIN_ADDRESS: "127.0.0.1", multinode.MAIN_PORT: str(port)}
    log = open(cwd / "pod.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "ops.multinode", str(work)], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_pods(work: Path, pods: list[Path], timeout: float = 400) -> list[int]:
    """Start both pods, wait for both; their exit codes (the timeout allows for a machine shared with other jobs)."""
    port = free_port()
    procs = [start_pod(i, pod, work, port) for i, pod in enumerate(pods)]
    try:
        return [p.wait(timeout=max(1.0, timeout)) for p in procs]
    finally:
        for p in procs:
            stop_process(p)


def kill_pod(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the pod at once: its launcher (torchrun's agent) and the trainer (torchrun
    starts its workers in sessions of their own, so the launcher's process group is not enough)."""
    import psutil

    launcher = psutil.Process(proc.pid)
    for p in [launcher, *launcher.children(recursive=True)]:
        p.send_signal(signal.SIGKILL)
    proc.wait()


def pod_log(pod: Path) -> str:
    return (pod / "pod.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, policy_cfg, rollouts):
    """One process with batch 2, and two pods with batch 1 each, both uninterrupted."""
    root = tmp_path_factory.mktemp("multinode")
    single = root / "single-out"
    run_job(write_job(root / "single-job", policy_cfg, REWARD, ROLLOUT, train_cfg(2, str(root / "single-checkpoints")),
                      rollouts), single)
    work, pods = pods_layout(root / "two", policy_cfg, rollouts)
    codes = run_pods(work, pods)
    assert codes == [0, 0], pod_log(pods[0])[-3000:] + pod_log(pods[1])[-3000:]
    return single, work, pods


def test_place_comes_from_the_multi_pod_variables_and_a_missing_one_is_named():
    env = {multinode.POD_COUNT: "4", multinode.POD_INDEX: "3", multinode.MAIN_ADDRESS: "job-0.job.srpo.svc",
           multinode.MAIN_PORT: "29500"}
    place = multinode.pod_place(env)
    cmd = multinode.torchrun_command(place, "/shared/run", nproc_per_node=8, entry="ops.train")
    flags = dict(zip(cmd[3:13:2], cmd[4:14:2]))
    assert flags == {"--nnodes": "4", "--node-rank": "3", "--nproc-per-node": "8",
                     "--master-addr": "job-0.job.srpo.svc", "--master-port": "29500"}
    assert cmd[-3:] == ["ops.train", "/shared/run/job", "/shared/run/out"]
    assert multinode.pod_place({}) == multinode.PodPlace(1, 0, "127.0.0.1", 29500)
    with pytest.raises(ValueError, match=f"^{multinode.POD_INDEX} is not set"):
        multinode.pod_place({k: v for k, v in env.items() if k != multinode.POD_INDEX})
    with pytest.raises(ValueError, match=f"^{multinode.POD_INDEX} is 4 with {multinode.POD_COUNT} 4"):
        multinode.pod_place({**env, multinode.POD_INDEX: "4"})


def test_two_pods_of_batch_one_equal_one_process_of_batch_two(uninterrupted):
    single, work, pods = uninterrupted
    assert max_abs_diff(transformer_weights(single), transformer_weights(work / "out")) <= 1e-5
    log = json.loads((work / "out" / "training_log.json").read_text())
    assert log["processes"] == 2 and [h["step"] for h in log["history"]] == list(range(STEPS))
    state = json.loads((pods[0] / CHECKPOINTS / f"step-{STEPS:06d}" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert "pod 1 of 2 (main 127.0.0.1:" in pod_log(pods[1])  # the entry point read the pod's variables


def test_kill_9_of_one_pod_then_both_restart_and_finish_like_the_uninterrupted_run(tmp_path, uninterrupted,
                                                                                  policy_cfg, rollouts):
    _, reference, _ = uninterrupted
    work, pods = pods_layout(tmp_path, policy_cfg, rollouts)
    ck = pods[0] / CHECKPOINTS
    port = free_port()
    procs = [start_pod(i, pod, work, port) for i, pod in enumerate(pods)]
    try:
        deadline = time.monotonic() + 100
        while not (ck / "step-000001").exists() and time.monotonic() < deadline and procs[1].poll() is None:
            time.sleep(0.02)
        kill_pod(procs[1])
        try:  # pod 0 loses its peer; the Job fails (backoff_limit 0) and ZenML's retry restarts every pod
            procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    finally:
        for p in procs:
            stop_process(p)
    assert not (work / "out").exists(), "the run finished before a pod could be killed"
    done = sorted(int(p.name.split("-")[1]) for p in ck.glob("step-*"))
    assert done and max(done) < STEPS

    assert run_pods(work, pods) == [0, 0], pod_log(pods[0])[-3000:]
    assert f"resumed from {CHECKPOINTS}/step-{max(done):06d}" in pod_log(pods[0])
    assert max_abs_diff(transformer_weights(work / "out"), transformer_weights(reference / "out")) <= 1e-6
    log = json.loads((work / "out" / "training_log.json").read_text())
    assert [h["step"] for h in log["history"]] == list(range(STEPS))


def test_a_pod_that_cannot_see_the_checkpoint_folder_stops_with_a_clear_error(tmp_path, uninterrupted):
    _, reference, reference_pods = uninterrupted
    work, pods = tmp_path / "work", [tmp_path / "pod0", tmp_path / "pod1"]
    shutil.copytree(reference / "job", work / "job")
    mid_run = f"step-{STEPS - 1:06d}"  # pod 0's disk has a checkpoint one update before the end
    shutil.copytree(reference_pods[0] / CHECKPOINTS / mid_run, pods[0] / CHECKPOINTS / mid_run)
    pods[1].mkdir()  # pod 1's disk does not: checkpoint_dir is not on a shared volume

    codes = run_pods(work, pods)
    assert codes[1] != 0 and codes[0] != 0
    assert (f"process 1 cannot read checkpoint {CHECKPOINTS}/{mid_run}, which the main process resumes from"
            in pod_log(pods[1]))
    assert "train.checkpoint_dir must be a folder every node shares" in pod_log(pods[1])
    assert "Root Cause (first observed failure)" in pod_log(pods[1])  # torchrun's report of the failed trainer
    assert not (work / "out").exists()
