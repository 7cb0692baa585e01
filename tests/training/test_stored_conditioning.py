"""Text encoders out of the training process: conditioning stored with the rollout set, used by the trainer."""

import pytest
import torch

from srpo.artifacts import RolloutSet
from srpo.config import RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the rollout_cfg fixture's


def test_rollouts_store_one_conditioning_row_per_prompt_and_it_survives_save_and_load(rollouts, tmp_path):
    cond = rollouts.conditioning
    assert cond["tokens"].shape[0] == cond["lengths"].shape[0] == cond["pooled"].shape[0] == len(rollouts)
    rollouts.save(tmp_path / "set")
    again = RolloutSet.load(tmp_path / "set")
    assert again.conditioning.keys() == cond.keys()
    assert all(torch.equal(again.conditioning[k], cond[k]) for k in cond)
    part = again.batch([2, 0])
    assert torch.equal(part.conditioning["tokens"], cond["tokens"][[2, 0]])


def test_a_policy_without_text_encoders_encodes_stored_prompts_exactly_and_refuses_others(policy_cfg, rollouts):
    full = load_policy(policy_cfg)
    lean = load_policy(policy_cfg, text_encoders=False)
    assert full.text_encoders and not lean.text_encoders
    lean.use_stored_conditioning(rollouts.prompts, rollouts.conditioning)
    a, b = full.encode_prompts(rollouts.prompts[:2]), lean.encode_prompts(rollouts.prompts[:2])
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)
    with pytest.raises(RuntimeError, match=r"^prompt 'never stored' has no stored conditioning"):
        lean.encode_prompts(["never stored"])


@pytest.mark.parametrize("mode, method", [("online", "srpo"), ("offline", "srpo"), ("online", "grpo")])
def test_training_without_text_encoders_gives_the_same_weights(policy_cfg, rollouts, mode, method):
    reward = load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))
    data = rollouts if mode == "online" else RolloutSet(
        rollouts.prompts, rollouts.x0, rollouts.eps, "offline", rollouts.height, rollouts.width,
        conditioning=rollouts.conditioning)
    grpo = dict(inversion=False, grpo={"group_size": 2, "steps": "first", "num_train_steps": 1}) if method == "grpo" else {}
    cfg = TrainConfig(steps=2, batch_size=2, learning_rate=1e-3, max_grad_norm=1.0, finetune="lora", lora_rank=4,
                      method=method, **grpo)
    weights = []
    for text_encoders in (True, False):
        trainer = SRPOTrainer(load_policy(policy_cfg, text_encoders=text_encoders), reward, data, cfg, ROLLOUT)
        trainer.train()
        weights.append({k: v.clone() for k, v in trainer.policy.transformer.state_dict().items() if "lora_" in k})
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
