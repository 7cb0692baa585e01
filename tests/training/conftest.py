"""A tiny FLUX policy config and a rollout set shared by the training tests; the same for every family."""

import pytest

from srpo.config import PolicyConfig, RolloutConfig
from srpo.models.families import load_policy
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


@pytest.fixture(scope="session")
def family_setups(family_dirs, policy_cfg, rollouts, rollout_cfg):
    """``family -> (PolicyConfig, RolloutSet)`` of its tiny model at 32x32, made once per session on first use."""
    made = {"flux": (policy_cfg, rollouts)}

    def get(family):
        if family not in made:
            cfg = PolicyConfig(pretrained=str(family_dirs[family]), height=32, width=32, device="cpu")
            made[family] = cfg, generate_rollouts(load_policy(cfg), PROMPTS, rollout_cfg, cfg)
        return made[family]

    return get
