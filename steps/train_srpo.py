"""Run the SRPO / Direct-Align trainer and store the result as a model folder."""

import json
from dataclasses import asdict
from typing import Annotated

from zenml import log_metadata, step

from srpo.artifacts import ModelFolder, RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.families import resolve_device
from srpo.rewards import RewardConfig
from srpo.training.launch import launch_processes, run_job, write_job
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def train_srpo(rollouts: RolloutSet, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
               train: TrainConfig) -> Annotated[ModelFolder, "tuned_transformer"]:
    """Apply exactly ``train.steps`` updates (resuming from ``train.checkpoint_dir`` if it holds a checkpoint).

    ``train.num_processes > 1`` launches that many processes on this node (accelerate on GPUs,
    torchrun on the CPU). A batch the run cannot meet (larger than the rollout set, or than the
    memory estimate of :mod:`srpo.training.sizes` allows) is refused here by ``write_job``, before
    any model is loaded. Returns the tuned transformer (full) or the LoRA adapter, both as
    diffusers-loadable safetensors.
    """
    library_logging()
    work = scratch_dir("srpo-train-")
    job = write_job(work / "job", policy, reward, rollout, train, rollouts)
    out = work / "out"
    if train.num_processes > 1:
        launch_processes(job, out, train.num_processes, cpu=resolve_device(policy.device).type == "cpu")
    else:
        run_job(job, out, on_step=lambda e: log_metadata(metadata={f"train_step_{e.step:05d}": asdict(e)}))
    history = json.loads((out / "training_log.json").read_text())["history"]
    if train.num_processes > 1:
        log_metadata(metadata={f"train_step_{h['step']:05d}": h for h in history})
    log_metadata(metadata={
        "steps": len(history),
        "skipped_updates": sum(h["skipped"] for h in history),
        "reward_curve": [h["reward"] for h in history],
        "loss_curve": [h["loss"] for h in history],
        "seconds_per_step": sum(h["seconds"] for h in history) / len(history),
        "finetune": train.finetune,
        "processes": train.num_processes,
    })
    return ModelFolder(out, kind="lora" if train.finetune == "lora" else "diffusers-transformer")
