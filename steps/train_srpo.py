"""Run the SRPO / Direct-Align trainer and store the result as a model folder."""

import json
from dataclasses import asdict
from typing import Annotated, Optional

from PIL import Image
from zenml import log_metadata, step
from zenml.integrations.pillow.materializers.pillow_image_materializer import PillowImageMaterializer  # noqa: F401

from srpo.artifacts import ModelFolder, RolloutSet
import srpo.evaluation.metrics  # noqa: F401  (registers the suite's scorer: reward {name: score, metric: ...})
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.families import resolve_device
from srpo.evaluation.config import MetricConfig
from srpo.rewards import RewardConfig
from srpo.rewards.config import MultiRewardConfig
from ops.train import ENTRY
from srpo.training.job import TrainingJob, train_job
from srpo.training.launch import launch_processes
from srpo.world.guard_metrics import build_job_guard_metrics
from srpo.world.plots import guard_curves, line_chart
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def train_srpo(rollouts: RolloutSet, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
               train: TrainConfig, heldout_prompts: Optional[list[str]] = None,
               metrics: Optional[dict[str, MetricConfig]] = None,
               extra_rewards: Optional[dict[str, RewardConfig]] = None,
               rewards: Optional[MultiRewardConfig] = None) -> tuple[
    Annotated[ModelFolder, "tuned_transformer"], Annotated[Image.Image, "training_curves"],
]:
    """Apply exactly ``train.steps`` updates (resuming from ``train.checkpoint_dir`` if it holds a checkpoint).

    The run is validated first (:meth:`srpo.training.job.TrainingJob.validate_run`, with the rollout
    count and the memory plan), before any model is loaded. One process trains here, from the
    objects; ``train.num_processes > 1`` writes the job folder and launches that many processes of
    ``python -m ops.train`` on this node (accelerate on GPUs, torchrun on the CPU). Returns the tuned
    transformer (full) or the LoRA adapter, both as diffusers-loadable safetensors: with
    ``train.guard``, the weights its selection rule picked (checked on ``heldout_prompts`` with the
    guard's metrics, among them ``metrics`` and ``extra_rewards``). ``training_curves``: the guard's
    curves, or the reward curve without a guard. ``rewards``: train against this weighted sum
    instead of ``reward`` (each term's curve is logged).
    """
    library_logging()
    work = scratch_dir("srpo-train-")
    job = TrainingJob(policy=policy, reward=reward, rollout=rollout, train=train, rewards=rewards,
                      guard_prompts=list(heldout_prompts or []),
                      metric_configs={k: v.model_dump(mode="json") for k, v in (metrics or {}).items()},
                      extra_rewards=dict(extra_rewards or {}))
    out = work / "out"
    if train.num_processes > 1:
        folder = job.write(work / "job", rollouts)
        launch_processes(folder, out, train.num_processes, cpu=resolve_device(policy.device).type == "cpu", entry=ENTRY)
    else:
        train_job(job, rollouts, out, guard_metrics=build_job_guard_metrics,
                  on_step=lambda e: log_metadata(metadata={f"train_step_{e.step:05d}": asdict(e)}))
    training_log = json.loads((out / "training_log.json").read_text())
    history, guard = training_log["history"], training_log.get("guard")
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
        "published_update": training_log.get("published_update", len(history)),
    })
    if history and history[0].get("terms"):  # a multi-reward: each term's unweighted denoise-branch value
        log_metadata(metadata={f"reward_curve_{name}": [h["terms"][name] for h in history] for name in history[0]["terms"]})
    if guard is not None:
        log_metadata(metadata={"guard_stopped": guard["stopped"] or "no", "guard_selected_update": guard["selected_update"],
                               "guard_seconds": guard["seconds"], "guard_checks": guard["checks"]})
        curves = guard_curves(guard)
    else:
        steps = [h["step"] + 1 for h in history]
        series = {"denoise-branch reward": (steps, [h["reward"] for h in history])}
        for name in (history[0].get("terms") or {}) if history else ():
            series[name] = (steps, [h["terms"][name] for h in history])
        curves = line_chart(series, "training reward")
    return ModelFolder(out, kind="lora" if train.finetune == "lora" else "diffusers-transformer"), curves
