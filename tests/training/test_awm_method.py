"""train.method awm in the trainer: updates that move the weights and repeat bit for bit, LoRA and full, the
EMA policy's soft update and resume, the strata refused before any model work."""

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.rewards.scores import ScoreReward
from srpo.training.methods import check_method
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the rollout_cfg fixture's
BRIGHT = ScoreReward(lambda images, prompts: images.mean((1, 2, 3)), "brightness")  # score-only


def make(policy, rollouts, finetune="full", awm=None, reward=BRIGHT, **overrides):
    cfg = TrainConfig(**{"method": "awm", "inversion": False, "steps": 1, "batch_size": 1, "learning_rate": 1e-3,
                         "max_grad_norm": 1.0, "finetune": finetune,
                         "awm": {"group_size": 2, "num_train_steps": 2, **(awm or {})}, **overrides})
    return SRPOTrainer(policy, reward, rollouts, cfg, ROLLOUT)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_an_update_moves_the_weights_and_repeats_bit_for_bit(fresh_policy, rollouts, trained_weights, finetune):
    runs = []
    for _ in range(2):
        trainer = make(fresh_policy(finetune), rollouts, finetune)
        before = trained_weights(trainer)
        log = trainer.train()[0]
        assert not log.skipped and len(log.sigmas) == 2
        runs.append(trained_weights(trainer))
        assert any(not torch.equal(before[n], p) for n, p in runs[-1].items())
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_equal_rewards_give_no_policy_gradient(fresh_policy, rollouts, trained_weights):
    """All advantages 0 (a constant score), no KL terms, no weight decay: the loss is 0 and nothing moves."""
    flat = ScoreReward(lambda images, prompts: torch.ones(images.shape[0]), "flat")
    cfg = TrainConfig(method="awm", inversion=False, steps=1, batch_size=1, learning_rate=1e-3, weight_decay=0,
                      awm={"group_size": 2, "num_train_steps": 2, "kl": 0, "ema_kl": 0})
    trainer = SRPOTrainer(fresh_policy(), flat, rollouts, cfg, ROLLOUT)
    before = trained_weights(trainer)
    log = trainer.train()[0]
    assert log.loss == 0 and log.grad_norm == 0
    assert all(torch.equal(before[n], p) for n, p in trained_weights(trainer).items())


def test_resume_equals_an_uninterrupted_run_ema_included(fresh_policy, rollouts, trained_weights, tmp_path):
    awm = {"ema_decay_rate": 0.2}  # an EMA that lags the trained weights
    straight = make(fresh_policy(), rollouts, awm=awm, steps=2)
    straight.train()
    a, a_ema = trained_weights(straight), [v.clone() for v in straight.method.ema.values]
    make(fresh_policy(), rollouts, awm=awm, steps=1, checkpoint_every=1, checkpoint_dir=str(tmp_path)).train()
    resumed = make(fresh_policy(), rollouts, awm=awm, steps=2, checkpoint_every=1, checkpoint_dir=str(tmp_path))
    resumed.train()
    assert [h.step for h in resumed.history] == [0, 1]
    b = trained_weights(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(x, y) for x, y in zip(a_ema, resumed.method.ema.values))
    assert any(not torch.equal(x, b[n]) for x, n in zip(a_ema, resumed.method.ema.names))


def test_strata_that_do_not_fit_the_sampler_are_refused():
    cfg = TrainConfig(method="awm", inversion=False)  # 6 strata of steps 1..3
    with pytest.raises(ValueError, match=r"^train.awm.num_train_steps 6 must be in \[1, 2\]"):
        check_method(cfg, ROLLOUT)
    with pytest.raises(ValueError, match=r"^train.nft is set but train.method is 'awm'"):
        check_method(TrainConfig(method="awm", inversion=False, nft={}), RolloutConfig(num_steps=25))


def test_an_update_trains_another_family(family_setups, trained_weights):
    """Through the policy interface of a family other than FLUX (its packing, guidance and timesteps)."""
    from srpo.models.families import load_policy

    policy_cfg, rollouts = family_setups("sd3")
    trainer = make(load_policy(policy_cfg), rollouts)
    before = trained_weights(trainer)
    assert not trainer.train()[0].skipped
    assert any(not torch.equal(before[n], p) for n, p in trained_weights(trainer).items())


def test_non_finite_scores_skip_the_update(fresh_policy, rollouts, trained_weights):
    nan = ScoreReward(lambda images, prompts: torch.full((images.shape[0],), float("nan")), "nan")
    trainer = make(fresh_policy(), rollouts, reward=nan)
    before = trained_weights(trainer)
    assert trainer.train_step(0).skipped and trainer.skipped == 1
    assert all(torch.equal(before[n], p) for n, p in trained_weights(trainer).items())
