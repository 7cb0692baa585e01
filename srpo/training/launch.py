"""Run a training job in this process, or as one process of many under accelerate / torchrun.

A job is a folder: ``job.json`` (the policy, reward, rollout and train configs, and an optional
checkpoint folder) and ``rollouts/`` (a saved :class:`~srpo.artifacts.RolloutSet`).

    python -m srpo.training.launch JOB_DIR OUT_DIR                     # one process
    accelerate launch --num_processes 8 -m srpo.training.launch JOB_DIR OUT_DIR
    torchrun --nnodes 4 --nproc-per-node 8 --node-rank $RANK --master-addr $ADDR \\
        --master-port 29500 -m srpo.training.launch JOB_DIR OUT_DIR    # several nodes
    python -m srpo.training.multinode WORK_DIR   # each pod of a multi-pod ZenML step: the torchrun above

Every process reads the same job; the trainer gives each its slice of the global batch. Running
the same command again resumes from the newest valid checkpoint in ``checkpoint_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig

JOB_FILE = "job.json"
log = logging.getLogger(__name__)


def write_job(job_dir: str | Path, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
              train: TrainConfig, rollouts: RolloutSet, checkpoint_dir: str | None = None) -> Path:
    """Write a job folder; ``checkpoint_dir`` defaults to ``train.checkpoint_dir``."""
    job_dir = Path(job_dir)
    checkpoint_dir = checkpoint_dir or train.checkpoint_dir
    rollouts.save(job_dir / "rollouts")
    job = {"policy": policy.model_dump(mode="json"), "reward": reward.model_dump(mode="json"),
           "rollout": rollout.model_dump(mode="json"), "train": train.model_dump(mode="json"),
           "checkpoint_dir": checkpoint_dir}
    (job_dir / JOB_FILE).write_text(json.dumps(job, indent=1))
    return job_dir


def run_job(job_dir: str | Path, out_dir: str | Path, on_step: Callable | None = None):
    """Train as described by ``job_dir`` and save into ``out_dir``; returns the trainer."""
    from srpo.models.flux import load_policy
    from srpo.rewards import load_reward
    from srpo.training.trainer import SRPOTrainer, make_accelerator

    job_dir = Path(job_dir)
    job = json.loads((job_dir / JOB_FILE).read_text())
    policy_cfg, train_cfg = PolicyConfig(**job["policy"]), TrainConfig(**job["train"])
    rollout_cfg, reward_cfg = RolloutConfig(**job["rollout"]), RewardConfig(**job["reward"])
    from srpo.models.flux import resolve_device

    accelerator = make_accelerator(train_cfg, cpu=resolve_device(policy_cfg.device).type == "cpu")
    policy = load_policy(policy_cfg, device=accelerator.device)
    reward = load_reward(reward_cfg, device=accelerator.device)
    trainer = SRPOTrainer(policy, reward, RolloutSet.load(job_dir / "rollouts"), train_cfg, rollout_cfg,
                          accelerator=accelerator, checkpoint_dir=job["checkpoint_dir"])
    trainer.train(on_step=on_step)
    trainer.save(out_dir)
    return trainer


def launch_processes(job_dir: str | Path, out_dir: str | Path, num_processes: int, cpu: bool) -> None:
    """Run this module as ``num_processes`` processes on this node.

    GPUs: ``accelerate launch --multi_gpu`` (one process per GPU, NCCL). CPU: ``torchrun``, which
    accelerate then sees as a multi-CPU run over gloo (``accelerate launch --cpu`` would start
    independent processes instead).
    """
    if cpu:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(num_processes)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "srpo.training.launch", str(job_dir), str(out_dir)]
    log.info("launching: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        sys.exit("usage: python -m srpo.training.launch JOB_DIR OUT_DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    run_job(*args)


if __name__ == "__main__":
    main()
