"""Run a training job in this process, or as one process of many under accelerate / torchrun.

A job is a folder: ``job.json`` (the policy, reward, rollout and train configs, the multi-reward
when ``rewards:`` is given; checkpoints go to ``train.checkpoint_dir``) and ``rollouts/`` (a saved
:class:`~srpo.artifacts.RolloutSet`).

    python -m srpo.training.launch JOB_DIR OUT_DIR                     # one process
    accelerate launch --num_processes 8 -m srpo.training.launch JOB_DIR OUT_DIR
    torchrun --nnodes 4 --nproc-per-node 8 --node-rank $RANK --master-addr $ADDR \\
        --master-port 29500 -m srpo.training.launch JOB_DIR OUT_DIR    # several nodes
    python -m srpo.training.multinode WORK_DIR   # each pod of a multi-pod ZenML step: the torchrun above

Every process reads the same job; the trainer gives each its slice of the global batch. Running
the same command again resumes from the newest valid checkpoint in ``train.checkpoint_dir``.
"""

from __future__ import annotations

import argparse
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
from srpo.rewards.config import MultiRewardConfig, check_trainable
from srpo.training.fit import check_training_fits
from srpo.training.sizes import check_batch_memory, check_batch_size, check_job

JOB_FILE = "job.json"
log = logging.getLogger(__name__)


def write_job(job_dir: str | Path, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
              train: TrainConfig, rollouts: RolloutSet, *, guard_prompts: list[str] | None = None,
              guard_suite: dict | None = None, rewards: MultiRewardConfig | None = None) -> Path:
    """Write a job folder, after refusing a reward the trainer cannot use (:func:`check_trainable`) and a
    batch it cannot meet (:mod:`srpo.training.sizes`).

    ``guard_prompts``: the held-out prompts ``train.guard`` takes its prompts from (when it names
    none); ``guard_suite``: ``{"metric_configs": {...}, "extra_rewards": {...}}`` as JSON, the
    evaluation metrics and extra rewards the guard may score with. ``rewards``: the training reward
    is this weighted sum instead of ``reward`` (which the guard's ``reward`` metric still reads).

    The memory bound is checked here for CPU jobs; a GPU job's processes check it against their
    GPU before loading anything (:func:`run_job`), so this process never touches CUDA.
    """
    from srpo.models.families import resolve_device

    if rewards is None:
        check_trainable(reward, train.reward_form)
    device = resolve_device(policy.device)
    check_batch_size(train, len(rollouts))
    if device.type == "cpu":
        check_batch_memory(train, policy.height, policy.width, device)
    if device.type == "cpu" or policy.gpu_memory_gb is not None:  # a GPU's own memory is read by run_job's processes
        check_training_fits(policy, train, rewards or reward, device, metrics=_metric_kinds((guard_suite or {})))
    job_dir = Path(job_dir)
    rollouts.save(job_dir / "rollouts")
    job = {"policy": policy.model_dump(mode="json"), "reward": reward.model_dump(mode="json"),
           "rollout": rollout.model_dump(mode="json"), "train": train.model_dump(mode="json"),
           "guard": {"held_out": list(guard_prompts or []), **(guard_suite or {})},
           "rewards": rewards.model_dump(mode="json") if rewards is not None else None}
    (job_dir / JOB_FILE).write_text(json.dumps(job, indent=1))
    return job_dir


def _metric_kinds(guard_suite: dict) -> dict:
    """``{name: object with .name}`` of a job's guard metric configs (JSON), what the memory plan reads."""
    from types import SimpleNamespace

    return {k: SimpleNamespace(name=v.get("name")) for k, v in (guard_suite.get("metric_configs") or {}).items()}


def run_job(job_dir: str | Path, out_dir: str | Path, on_step: Callable | None = None):
    """Train as described by ``job_dir`` and save into ``out_dir``; returns the trainer."""
    from srpo.models.families import load_policy, resolve_device
    from srpo.rewards import load_reward
    from srpo.rewards.combine import load_multi_reward, load_once
    from srpo.rewards.scores import check_reward_for_method
    from srpo.training.distributed import make_accelerator
    from srpo.training.trainer import SRPOTrainer

    job_dir = Path(job_dir)
    job = json.loads((job_dir / JOB_FILE).read_text())
    policy_cfg, train_cfg = PolicyConfig(**job["policy"]), TrainConfig(**job["train"])
    rollout_cfg, reward_cfg = RolloutConfig(**job["rollout"]), RewardConfig(**job["reward"])
    rollouts = RolloutSet.load(job_dir / "rollouts")
    accelerator = make_accelerator(train_cfg, cpu=resolve_device(policy_cfg.device).type == "cpu")
    check_job(train_cfg, policy_cfg, len(rollouts), accelerator.device)  # before any model is loaded
    check_training_fits(policy_cfg, train_cfg, MultiRewardConfig(**job["rewards"]) if job.get("rewards") else reward_cfg,
                        accelerator.device, metrics=_metric_kinds(job.get("guard", {})))
    check_reward_for_method(train_cfg.method, reward_cfg.name, reward_cfg.score_label)
    # stored conditioning: no text encoder in training, unless the guard must encode its held-out prompts
    policy = load_policy(policy_cfg, device=accelerator.device,
                         text_encoders=not rollouts.conditioning or train_cfg.guard is not None)
    loaded: dict = {}  # reward models by config: one shared by `reward` and `rewards:` is loaded once
    reward = load_once(reward_cfg, loaded, load_reward, accelerator.device)
    guard = build_guard(train_cfg, job.get("guard", {}), reward, accelerator) if train_cfg.guard else None
    training_reward = reward
    if job.get("rewards"):  # the training reward is the weighted sum
        training_reward = load_multi_reward(MultiRewardConfig(**job["rewards"]), accelerator.device, loaded=loaded)
    trainer = SRPOTrainer(policy, training_reward, rollouts, train_cfg, rollout_cfg, accelerator=accelerator,
                          guard=guard)
    trainer.train(on_step=on_step)
    trainer.save(out_dir)
    return trainer


#: What builds a guard's metric functions: the shapes world's grader plus the suite, or the suite alone.
GUARD_METRIC_BUILDERS = {"world": "srpo.world.guard_metrics:build_world_guard_metrics",
                         "suite": "srpo.evaluation.guard_metrics:build_guard_metrics"}


def build_guard(train_cfg: TrainConfig, job_guard: dict, reward, accelerator):
    """The :class:`~srpo.training.guard.Guard` of ``train.guard``: prompts, seeds, metric functions, rank split.

    Its metrics come from the evaluation suite and the world grader, above this layer: they are
    imported by name (:data:`GUARD_METRIC_BUILDERS`).
    """
    from srpo.config import GUARD_WORLD_PREFIX
    from srpo.io import import_by_name
    from srpo.training.guard import Guard

    gcfg = train_cfg.guard
    prompts, seeds = gcfg.prompts_and_seeds(job_guard.get("held_out"))
    kind = "world" if any(n.startswith(GUARD_WORLD_PREFIX) for n in gcfg.metrics) else "suite"
    metrics = import_by_name(GUARD_METRIC_BUILDERS[kind])(
        gcfg, reward=reward, device=str(accelerator.device),
        metric_configs=job_guard.get("metric_configs") or {},  # JSON: the builder validates it
        extra_rewards={k: RewardConfig(**v) for k, v in (job_guard.get("extra_rewards") or {}).items()})
    gather = None
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        gather = lambda obj: gather_object([obj])  # noqa: E731  (every rank's object, in rank order)
    return Guard(gcfg, metrics, prompts, seeds, rank=accelerator.process_index, world=accelerator.num_processes,
                 gather=gather)


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
    parser = argparse.ArgumentParser(prog="python -m srpo.training.launch",
                                     description="One process of a multi-process training job (started by "
                                                 "accelerate or torchrun): train the job in JOB_DIR into OUT_DIR.")
    parser.add_argument("job_dir", metavar="JOB_DIR", help="the folder the parent process wrote the job to")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the tuned transformer is written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    run_job(args.job_dir, args.out_dir)


if __name__ == "__main__":
    main()
