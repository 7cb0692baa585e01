"""Run the SRPO / Direct-Align trainer and store the tuned transformer as a model folder."""

import tempfile
from pathlib import Path
from typing import Annotated

from zenml import log_metadata, step

from srpo.artifacts import ModelFolder, RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.flux import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.training.trainer import SRPOTrainer
from steps._log import library_logging


@step
def train_srpo(rollouts: RolloutSet, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
               train: TrainConfig) -> Annotated[ModelFolder, "tuned_transformer"]:
    """Apply exactly ``train.steps`` updates; returns the tuned transformer (diffusers, safetensors)."""
    library_logging()
    flux = load_policy(policy)
    trainer = SRPOTrainer(flux, load_reward(reward, device=flux.device), rollouts, train, rollout)
    history = trainer.train()
    out = trainer.save(Path(tempfile.mkdtemp(prefix="srpo-tuned-")))
    log_metadata(metadata={
        "steps": len(history),
        "skipped_updates": trainer.skipped,
        "d_sigma": trainer.d_sigma,
        "reward_curve": [h.reward for h in history],
        "loss_curve": [h.loss for h in history],
        "seconds_per_step": sum(h.seconds for h in history) / len(history),
    })
    return ModelFolder(out, kind="diffusers-transformer")
