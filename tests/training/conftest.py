"""A tiny FLUX policy config and a rollout set shared by the training tests."""

import pytest

from srpo.config import PolicyConfig, RolloutConfig
from srpo.models.flux import load_policy
from srpo.training.rollouts import generate_rollouts

PROMPTS = ["a red circle", "a blue square", "a black cat", "a white bird"]


@pytest.fixture(scope="session")
def policy_cfg(tiny_flux_dir):
    return PolicyConfig(pretrained=str(tiny_flux_dir), height=32, width=32, device="cpu")


@pytest.fixture(scope="session")
def rollout_cfg():
    return RolloutConfig(num_steps=4)


@pytest.fixture(scope="session")
def rollouts(policy_cfg, rollout_cfg):
    return generate_rollouts(load_policy(policy_cfg), PROMPTS, rollout_cfg, policy_cfg)
