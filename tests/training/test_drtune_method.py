"""train.method drtune in the trainer: refused with a score-only reward when the run is validated, updates that
move the weights and repeat bit for bit (LoRA and full), its draws seeded by the update."""

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig, load_reward
from srpo.training.job import TrainingJob
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the rollout_cfg fixture's
CLIP = RewardConfig(name="clip", checkpoint="builtin:tiny")


def settings(**overrides):
    return {"method": "drtune", "inversion": False, "steps": 1, "batch_size": 1, "learning_rate": 1e-3,
            "max_grad_norm": 1.0, "reward_form": "plain", "drtune": {"num_train_steps": 2}, **overrides}


def test_a_score_only_reward_is_refused_when_the_run_is_validated(policy_cfg):
    job = TrainingJob(policy=policy_cfg, reward=RewardConfig(name="score", function="shapes-bright"), rollout=ROLLOUT,
                      train=TrainConfig(**settings()))
    with pytest.raises(ValueError, match=r"^train.method 'drtune' backpropagates through the reward, but the reward "
                                         r"'shapes-bright' is score-only: use train.method awm or grpo or mixgrpo or "
                                         r"nft, or a differentiable"):
        job.validate_run()
    TrainingJob(policy=policy_cfg, reward=CLIP, rollout=ROLLOUT, train=TrainConfig(**settings())).validate_run()


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_an_update_moves_the_weights_and_repeats_bit_for_bit(fresh_policy, rollouts, trained_weights, finetune):
    reward, runs = load_reward(CLIP), []
    for _ in range(2):
        trainer = SRPOTrainer(fresh_policy(finetune), reward, rollouts, TrainConfig(**settings(finetune=finetune)),
                              ROLLOUT)
        before = trained_weights(trainer)
        assert not trainer.train()[0].skipped
        runs.append(trained_weights(trainer))
        assert any(not torch.equal(before[n], p) for n, p in runs[-1].items())
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    plans = [trainer.method.chain_plan(trainer.ctx, step) for step in range(8)]
    for steps, stop in plans:  # K equally spaced trained steps, all before the step the reward reads
        assert len(steps) == 2 and 0 <= min(steps) and max(steps) <= stop <= 3
    assert plans[0] == trainer.method.chain_plan(trainer.ctx, 0)  # seeded by the update


def test_another_methods_settings_block_is_refused():
    from srpo.training.methods import check_method

    with pytest.raises(ValueError, match=r"^train.drtune is set but train.method is 'draft'"):
        check_method(TrainConfig(method="draft", inversion=False, drtune={}), ROLLOUT)


def test_an_update_trains_another_family(family_setups, trained_weights):
    """Through the policy interface of a family other than FLUX (its packing, guidance and timesteps)."""
    from srpo.models.families import load_policy

    policy_cfg, rollouts = family_setups("sd3")
    trainer = SRPOTrainer(load_policy(policy_cfg), load_reward(CLIP), rollouts, TrainConfig(**settings()), ROLLOUT)
    before = trained_weights(trainer)
    assert not trainer.train()[0].skipped
    assert any(not torch.equal(before[n], p) for n, p in trained_weights(trainer).items())


def test_an_update_makes_no_rollout_it_would_not_use(fresh_policy, rollouts, monkeypatch):
    """The chain starts from the batch's noise: no online rollout of clean images is made for it (nor for draft)."""
    trainer = SRPOTrainer(fresh_policy(), load_reward(CLIP), rollouts, TrainConfig(**settings(steps=2)), ROLLOUT)
    monkeypatch.setattr(trainer.policy, "rollout", lambda *args, **kwargs: pytest.fail("a rollout was made"))
    assert not trainer.train_step(1).skipped
