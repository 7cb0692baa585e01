"""train.method mixgrpo in the trainer: the SDE and the training only inside the window (sliding and branch),
the window's log-probabilities are GRPO's, updates that repeat bit for bit, LoRA and full."""

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.grpo import sde_mean_std, step_log_prob
from srpo.rewards.scores import ScoreReward
from srpo.training.methods import check_method
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the rollout_cfg fixture's: 3 stochastic steps
BRIGHT = ScoreReward(lambda images, prompts: images.mean((1, 2, 3)), "brightness")  # score-only


def make(policy, rollouts, finetune="full", mixgrpo=None, **overrides):
    cfg = TrainConfig(**{"method": "mixgrpo", "inversion": False, "steps": 1, "batch_size": 1, "learning_rate": 1e-3,
                         "max_grad_norm": 1.0, "finetune": finetune, "grpo": {"group_size": 2, "clip_range": 0.2},
                         "mixgrpo": {"window_size": 2, "shift_every": 1, **(mixgrpo or {})}, **overrides})
    return SRPOTrainer(policy, BRIGHT, rollouts, cfg, ROLLOUT)


def test_only_the_window_is_stochastic_and_trained_and_it_slides(fresh_policy, rollouts):
    trainer = make(fresh_policy(), rollouts)
    for step, window in [(0, [0, 1]), (1, [1, 2]), (2, [0, 1])]:  # moved every update, rolled back at the end
        groups = trainer.method.sample(trainer.ctx, step)
        assert groups.steps == window
        assert [k for k in range(4) if float(groups.stds[k]) > 0] == window
        assert [k for k in range(4) if bool((groups.log_probs[k] != 0).all())] == window
        assert {k for k, _ in trainer.method.micro_steps(trainer.ctx, groups)} == set(window)
    # outside the window the chain is the ODE: each latent is the Euler step of the one before
    velocity = trainer.policy.velocity_fn(trainer.policy.encode_prompts(groups.prompts), trainer.cfg.guidance)
    with torch.no_grad():
        x = groups.latents[3]
        ode, _ = sde_mean_std(x, velocity(x, groups.sigmas[3].expand(2)), float(groups.sigmas[3]), 0.0, 0.0)
    torch.testing.assert_close(groups.latents[4], ode, atol=1e-5, rtol=0)


def test_the_branch_windows_log_probabilities_are_grpos(fresh_policy, rollouts):
    trainer = make(fresh_policy(), rollouts, mixgrpo={"mode": "branch", "window_size": 1, "shift_every": 25,
                                                      "branch_range": (1, 3)})
    groups = trainer.method.sample(trainer.ctx, 0)
    (k,) = groups.steps
    assert 1 <= k < 3 and [j for j in range(4) if float(groups.stds[j]) > 0] == [k]
    velocity = trainer.policy.velocity_fn(trainer.policy.encode_prompts(groups.prompts), trainer.cfg.guidance)
    with torch.no_grad():
        logp, _, _ = step_log_prob(velocity, groups.latents[k], groups.latents[k + 1], float(groups.sigmas[k]),
                                   float(groups.sigmas[k + 1]), float(groups.stds[k]))
    torch.testing.assert_close(logp, groups.log_probs[k], atol=1e-4, rtol=0)
    # the draw is seeded by the update: the same again
    assert trainer.method.sample(trainer.ctx, 0).steps == [k]


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_an_update_moves_the_weights_and_repeats_bit_for_bit(fresh_policy, rollouts, trained_weights, finetune):
    runs = []
    for _ in range(2):
        trainer = make(fresh_policy(finetune), rollouts, finetune)
        before = trained_weights(trainer)
        assert not trainer.train()[0].skipped
        runs.append(trained_weights(trainer))
        assert any(not torch.equal(before[n], p) for n, p in runs[-1].items())
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_a_window_that_does_not_fit_is_refused_and_the_grpo_step_subset_too():
    with pytest.raises(ValueError, match=r"^train.mixgrpo.window_size 4 exceeds the 3 stochastic sampler steps"):
        check_method(TrainConfig(method="mixgrpo", inversion=False), ROLLOUT)
    with pytest.raises(ValueError, match=r"^train.grpo.steps 'first' is not used by mixgrpo"):
        check_method(TrainConfig(method="mixgrpo", inversion=False, grpo={"steps": "first", "num_train_steps": 1},
                                 mixgrpo={"window_size": 2}), ROLLOUT)
    with pytest.raises(ValueError, match=r"^train.mixgrpo is set but train.method is 'grpo'"):
        check_method(TrainConfig(method="grpo", inversion=False, mixgrpo={}), ROLLOUT)


def test_an_update_trains_another_family(family_setups, trained_weights):
    """Through the policy interface of a family other than FLUX (its packing, guidance and timesteps)."""
    from srpo.models.families import load_policy

    policy_cfg, rollouts = family_setups("sd3")
    trainer = make(load_policy(policy_cfg), rollouts)
    before = trained_weights(trainer)
    assert not trainer.train()[0].skipped
    assert any(not torch.equal(before[n], p) for n, p in trained_weights(trainer).items())
