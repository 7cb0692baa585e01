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


@pytest.fixture(scope="module")
def fresh_policy(policy_cfg):
    """``fresh(finetune)``: the tiny FLUX policy with its initial weights; full fine-tuning reuses one loaded
    policy (its weights reset), LoRA loads a new one (the adapters change the module)."""
    import torch

    policy = load_policy(policy_cfg)
    initial = {k: v.clone() for k, v in policy.transformer.state_dict().items()}

    def fresh(finetune: str = "full"):
        if finetune == "lora":
            return load_policy(policy_cfg)
        with torch.no_grad():
            policy.transformer.load_state_dict(initial)
        policy.set_forward_module(None)
        return policy
    return fresh


@pytest.fixture(scope="session")
def trained_weights():
    """``weights(trainer)``: the trained parameters by name, copied."""
    return lambda trainer: {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters()
                            if p.requires_grad}
