"""train.method nft in the trainer: updates that move the weights and repeat bit for bit, LoRA and full, the
old policy's soft update, resume with the old policy, its settings block."""

import pytest
import torch

from srpo.config import NFTConfig, RolloutConfig, TrainConfig
from srpo.rewards.scores import ScoreReward
from srpo.training.methods import check_method, method_class
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the rollout_cfg fixture's
BRIGHT = ScoreReward(lambda images, prompts: images.mean((1, 2, 3)), "brightness")  # score-only


def make(policy, rollouts, finetune="full", nft=None, reward=BRIGHT, **overrides):
    cfg = TrainConfig(**{"method": "nft", "inversion": False, "steps": 1, "batch_size": 1, "learning_rate": 1e-3,
                         "max_grad_norm": 1.0, "finetune": finetune,
                         "nft": {"group_size": 2, "train_fraction": 0.5, **(nft or {})},  # 2 of the 4 levels
                         **overrides})
    return SRPOTrainer(policy, reward, rollouts, cfg, ROLLOUT)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_an_update_moves_the_weights_and_repeats_bit_for_bit(fresh_policy, rollouts, trained_weights, finetune):
    runs = []
    for _ in range(2):
        trainer = make(fresh_policy(finetune), rollouts, finetune)
        before = trained_weights(trainer)
        log = trainer.train()[0]
        assert not log.skipped and log.loss == log.loss
        runs.append(trained_weights(trainer))
        assert any(not torch.equal(before[n], p) for n, p in runs[-1].items())
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_the_old_policy_moves_softly_towards_the_trained_one(fresh_policy, rollouts, trained_weights):
    trainer = make(fresh_policy(), rollouts, nft={"decay_rate": 0.25, "decay_cap": 0.5})  # decay 0.25 after update 1
    before = trained_weights(trainer)
    trainer.train()
    after = trained_weights(trainer)
    old = dict(zip(trainer.method.old.names, trainer.method.old.values))
    for n in before:
        torch.testing.assert_close(old[n], 0.25 * before[n] + 0.75 * after[n], rtol=0, atol=1e-6)
    assert any(not torch.equal(old[n], after[n]) for n in before)


def test_resume_equals_an_uninterrupted_run_old_policy_included(fresh_policy, rollouts, trained_weights, tmp_path):
    nft = {"decay_rate": 0.3}  # an old policy that lags the trained one
    straight = make(fresh_policy(), rollouts, nft=nft, steps=2)
    straight.train()
    a, a_old = trained_weights(straight), [v.clone() for v in straight.method.old.values]
    make(fresh_policy(), rollouts, nft=nft, steps=1, checkpoint_every=1, checkpoint_dir=str(tmp_path)).train()
    resumed = make(fresh_policy(), rollouts, nft=nft, steps=2, checkpoint_every=1, checkpoint_dir=str(tmp_path))
    resumed.train()
    assert [h.step for h in resumed.history] == [0, 1]
    b = trained_weights(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(x, y) for x, y in zip(a_old, resumed.method.old.values))


def test_another_methods_settings_block_is_refused():
    cfg = TrainConfig(method="nft", inversion=False, awm={})
    with pytest.raises(ValueError, match=r"^train.awm is set but train.method is 'nft' \(which reads train.nft\): "
                                         r"remove train.awm or set method: awm"):
        check_method(cfg, ROLLOUT)
    bare = TrainConfig(method="nft", inversion=False)
    assert bare.nft is None and method_class("nft").configure(bare).nft == NFTConfig()  # the row fills its block


def test_an_update_trains_another_family(family_setups, trained_weights):
    """Through the policy interface of a family other than FLUX (its packing, guidance and timesteps)."""
    from srpo.models.families import load_policy

    policy_cfg, rollouts = family_setups("sd3")
    trainer = make(load_policy(policy_cfg), rollouts)
    before = trained_weights(trainer)
    assert not trainer.train()[0].skipped
    assert any(not torch.equal(before[n], p) for n, p in trained_weights(trainer).items())


def test_micro_batches_accumulate_the_same_loss(fresh_policy, rollouts):
    """``micro_batch`` splits each level's samples into backward micro-steps: the same mean loss and samples."""
    whole = make(fresh_policy(), rollouts).train()[0]
    split = make(fresh_policy(), rollouts, nft={"micro_batch": 1}).train()[0]
    assert split.reward == whole.reward and split.sigmas == whole.sigmas
    assert split.loss == pytest.approx(whole.loss, rel=1e-5)


def test_non_finite_scores_skip_the_update(fresh_policy, rollouts, trained_weights):
    nan = ScoreReward(lambda images, prompts: torch.full((images.shape[0],), float("nan")), "nan")
    trainer = make(fresh_policy(), rollouts, reward=nan)
    before = trained_weights(trainer)
    assert trainer.train_step(0).skipped and trainer.skipped == 1
    assert all(torch.equal(before[n], p) for n, p in trained_weights(trainer).items())
