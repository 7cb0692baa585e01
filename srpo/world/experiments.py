"""Shared machinery of the world benchmarks: train one method from the same start, measure before/after.

Every method (SRPO, Direct-Align, ReFL, DRaFT-LV, ablations) is a ``TrainConfig`` for the one
:class:`~srpo.training.trainer.SRPOTrainer`: same rollouts, same reward, same update code, same
number of steps and seed; only the config differs. Measurements use the world's grader on
images generated from the 60 base prompts with fixed seeds (:mod:`srpo.world.report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.world.report import WorldReportConfig, eval_prompts, generate, measure, steering_from_words

log = logging.getLogger(__name__)


@dataclass
class Setting:
    """What every method in a benchmark shares."""

    policy: PolicyConfig
    rollout: RolloutConfig
    reward: object  # a loaded RewardModel
    rollouts: object  # a RolloutSet
    report: WorldReportConfig = field(default_factory=lambda: WorldReportConfig(samples_per_prompt=2))


def load_world_policy(policy_cfg: PolicyConfig):
    from srpo.models.families import load_policy

    return load_policy(policy_cfg)


def make_rollouts(policy_cfg: PolicyConfig, rollout_cfg: RolloutConfig, prompts: list[str]):
    from srpo.training.rollouts import generate_rollouts

    return generate_rollouts(load_world_policy(policy_cfg), prompts, rollout_cfg, policy_cfg)


def measure_policy(policy, setting: Setting, positive_words: list[str], negative_word: str | None) -> dict:
    steering = steering_from_words(positive_words)
    prompts, seeds = eval_prompts(setting.report)
    images = generate(policy, prompts, seeds, setting.report)
    return measure(images, prompts, steering, setting.reward, negative_word)


def run_method(name: str, train: TrainConfig, setting: Setting, steer_words: tuple[list[str], str | None],
               before: dict | None = None) -> dict:
    """Train a fresh copy of the base policy with ``train``; returns before/after measures and gains."""
    from srpo.training.trainer import SRPOTrainer

    positive, negative = steer_words
    policy = load_world_policy(setting.policy)
    if before is None:
        before = measure_policy(policy, setting, positive, negative)
    start = time.perf_counter()
    trainer = SRPOTrainer(policy, setting.reward, setting.rollouts, train, setting.rollout)
    history = trainer.train()
    seconds = time.perf_counter() - start
    policy.transformer.eval()
    after = measure_policy(policy, setting, positive, negative)
    result = {
        "name": name,
        "target_gain": after["steered_share"] - before["steered_share"],
        "bias_gain": after["vivid_share"] - before["vivid_share"],
        "saturation_gain": after["mean_saturation"] - before["mean_saturation"],
        "fidelity": after["colours"],
        "fidelity_change": after["colours"] - before["colours"],
        "shape_fidelity": after["shape"],
        "reward_gain": after["reward"] - before["reward"],
        "before": before, "after": after,
        "train_reward_first_last": [history[0].reward, history[-1].reward],
        "seconds": seconds, "skipped_updates": trainer.skipped,
        "config": train.model_dump(mode="json", exclude_defaults=True),
    }
    log.info("%s: target %+.3f bias %+.3f fidelity %.3f (%.0f s)", name, result["target_gain"], result["bias_gain"],
             result["fidelity"], seconds)
    del trainer, policy
    return result


def base_measure(setting: Setting, steer_words: tuple[list[str], str | None]) -> dict:
    with torch.no_grad():
        return measure_policy(load_world_policy(setting.policy), setting, *steer_words)
