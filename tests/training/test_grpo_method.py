"""train.method grpo in the trainer: on-policy ratio, descent in expectation, resume, score-only rewards, every family."""

import math

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.scores import ScoreReward, register_score, resolve_score
from srpo.training.methods import check_method, method_for
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the same as the rollout_cfg fixture


def brightness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """A toy score: mean pixel value [B]."""
    return images.mean((1, 2, 3))


BRIGHT = ScoreReward(brightness, "brightness")


@pytest.fixture(scope="module")
def base(policy_cfg):
    """The tiny policy, loaded once: each call hands it back with its initial weights (full fine-tuning only)."""
    policy = load_policy(policy_cfg)
    initial = {k: v.clone() for k, v in policy.transformer.state_dict().items()}

    def fresh():
        policy.transformer.load_state_dict(initial)
        policy.set_forward_module(None)
        return policy
    return fresh


def make_trainer(policy, rollouts, reward=BRIGHT, **overrides):
    grpo = {"group_size": 4, "clip_range": 0.2, **overrides.pop("grpo", {})}
    cfg = TrainConfig(**{"method": "grpo", "inversion": False, "steps": 1, "batch_size": 2, "learning_rate": 1e-3,
                         "max_grad_norm": 1.0, "grpo": grpo, **overrides})
    return SRPOTrainer(policy, reward, rollouts, cfg, ROLLOUT)


def weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters() if p.requires_grad}


def test_sampling_keeps_the_chain_and_log_probs_and_normalises_per_group(base, rollouts):
    trainer = make_trainer(base(), rollouts, grpo={"steps": "first", "num_train_steps": 2})
    groups = trainer.method.sample(trainer.ctx, 0)
    assert groups.latents.shape[:2] == (5, 8) and groups.log_probs.shape == (4, 8)
    assert groups.steps == [0, 1]
    assert bool(torch.isfinite(groups.log_probs).all()) and bool((groups.log_probs[-1] == 0).all())
    adv = groups.advantages.reshape(2, 4)
    torch.testing.assert_close(adv.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    # the members of a group start from different noise, unless shared
    assert not torch.equal(groups.latents[0][0], groups.latents[0][1])
    sharing = make_trainer(base(), rollouts, grpo={"shared_noise": True})
    shared = sharing.method.sample(sharing.ctx, 0)
    assert torch.equal(shared.latents[0][0], shared.latents[0][3]) and not torch.equal(shared.latents[1][0], shared.latents[1][1])


def test_the_ratio_is_exactly_one_on_the_first_inner_update_and_moves_after(base, rollouts):
    trainer = make_trainer(base(), rollouts, grpo={"inner_epochs": 2})
    groups = trainer.method.sample(trainer.ctx, 0)
    # the kept log-probs are the policy's: the grad pass recomputes them up to rounding
    k = groups.steps[0]
    velocity = trainer.policy.velocity_fn(trainer.policy.encode_prompts(groups.prompts), trainer.cfg.guidance)
    from srpo.grpo import step_log_prob
    with torch.no_grad():
        logp, _, _ = step_log_prob(velocity, groups.latents[k], groups.latents[k + 1], float(groups.sigmas[k]),
                                   float(groups.sigmas[k + 1]), float(groups.stds[k]))
    torch.testing.assert_close(logp, groups.log_probs[k], atol=1e-4, rtol=0)
    _, _, skipped, ratios = trainer.method.optimise(trainer.ctx, groups, 0)
    assert not skipped and len(ratios) == 2
    assert bool((ratios[0] == 1).all())
    assert not bool((ratios[1] == 1).all())


def test_one_update_raises_the_group_mean_reward_in_expectation(base, rollouts):
    """Paired: the same seeded groups (step 100) scored before and after one update from step 0, over 3 seeds."""
    gains = []
    for seed in range(3):
        trainer = make_trainer(base(), rollouts, seed=seed)
        before = trainer.method.sample(trainer.ctx, 100).rewards.mean().item()
        log = trainer.train_step(0)
        assert not log.skipped and log.grad_norm > 0
        gains.append(trainer.method.sample(trainer.ctx, 100).rewards.mean().item() - before)
    assert sum(gains) / len(gains) > 0, gains


def test_clip_rewards_with_control_words_train_too(policy_cfg, rollouts):
    reward = load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))
    trainer = make_trainer(load_policy(policy_cfg), rollouts, reward=reward, reward_form="srp", finetune="lora", lora_rank=2,
                           grpo={"kl": 0.1, "steps": "random", "num_train_steps": 2})
    before = weights(trainer)
    log = trainer.train_step(0)
    assert not log.skipped and len(log.sigmas) == 2
    assert any(not torch.equal(before[n], p) for n, p in weights(trainer).items())


def test_resume_equals_an_uninterrupted_run(base, rollouts, tmp_path):
    straight = make_trainer(base(), rollouts, steps=2)
    straight.train()
    a = weights(straight)
    first = make_trainer(base(), rollouts, steps=1, checkpoint_every=1, checkpoint_dir=str(tmp_path))
    first.train()
    resumed = make_trainer(base(), rollouts, steps=2, checkpoint_every=1, checkpoint_dir=str(tmp_path))
    resumed.train()
    assert [h.step for h in resumed.history] == [0, 1]
    assert [h.reward for h in resumed.history] == pytest.approx([h.reward for h in straight.history], abs=1e-6)
    b = weights(resumed)
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-6


def test_non_finite_scores_skip_the_update(base, rollouts):
    nan = ScoreReward(lambda images, prompts: torch.full((images.shape[0],), float("nan")), "nan")
    trainer = make_trainer(base(), rollouts, reward=nan)
    before = weights(trainer)
    assert trainer.train_step(0).skipped and trainer.skipped == 1
    assert all(torch.equal(before[n], p) for n, p in weights(trainer).items())


def test_gradient_methods_refuse_score_only_rewards(base, rollouts):
    cfg = TrainConfig(method="direct_align", inversion=False, steps=1, batch_size=2)
    with pytest.raises(ValueError, match=r"^train.method 'direct_align' backpropagates through the reward"):
        SRPOTrainer(base(), BRIGHT, rollouts, cfg, ROLLOUT)


def test_score_functions_resolve_by_registered_name_or_module_path():
    register_score("toy-brightness", f"{__name__}:brightness")
    assert resolve_score("toy-brightness") is brightness
    assert resolve_score("srpo.world.scoring:bright_score").__name__ == "bright_score"
    with pytest.raises(ValueError, match=r"reward.function 'nothing' is neither"):
        RewardConfig(name="score", function="nothing")
    with pytest.raises(ValueError, match=r"cannot be imported"):
        resolve_score("srpo.no_such_module:fn")
    with pytest.raises(ValueError, match=r"neither reward.function nor reward.metric is set"):
        RewardConfig(name="score")
    with pytest.raises(ValueError, match=r"reward.function is set but reward.name is 'clip'"):
        RewardConfig(name="clip", function="shapes-bright")


def test_an_evaluation_metric_trains_as_a_score_only_reward(base, rollouts):
    """reward: {name: score, metric: {...}}: the suite's metric scores the groups, without gradient."""
    from srpo.evaluation.config import MetricConfig
    from srpo.evaluation.metrics import load_metric

    config = RewardConfig(name="score", metric={"name": "aesthetic_v2.5", "checkpoint": "builtin:tiny"}, scale=2.0)
    reward = load_reward(config)
    assert reward.score_only and reward.name == "metric:aesthetic_v2.5" and config.score_label == reward.name
    images = torch.rand(2, 3, 32, 32)
    metric = load_metric(MetricConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny"))
    assert torch.allclose(reward.score(images, ["a", "b"]), 2.0 * metric.score(images, ["a", "b"]), atol=1e-6)
    trainer = make_trainer(base(), rollouts, reward=reward)
    (log,) = trainer.train()
    assert not log.skipped and log.grad_norm > 0
    with pytest.raises(ValueError, match=r"^train.method 'direct_align' backpropagates .* 'metric:aesthetic_v2.5'"):
        from srpo.training.methods import check_method

        check_method(TrainConfig(method="direct_align", inversion=False), ROLLOUT, True, repr(config.score_label))
    with pytest.raises(ValueError, match=r"both reward.function and reward.metric are set"):
        RewardConfig(name="score", function="shapes-bright", metric={"name": "imagereward"})
    with pytest.raises(ValueError, match=r"reward.metric is set but reward.name is 'clip'"):
        RewardConfig(name="clip", metric={"name": "imagereward"})
    with pytest.raises(ValueError, match=r"is an external program"):
        load_reward(RewardConfig(name="score", metric={"name": "deqa", "results": "/r.json"}))
    from srpo.evaluation.config import check_metric_config

    with pytest.raises(ValueError, match=r"^reward.metric"):
        check_metric_config({"name": "imagereward", "encoder": "x"}, "reward.metric")
    assert RewardConfig(**config.model_dump()) == config  # dumps re-validate (ZenML step parameters)


def test_grpo_checks_its_settings():
    cfg = TrainConfig(method="grpo", inversion=False, grpo={"steps": "first", "num_train_steps": 4})
    with pytest.raises(ValueError, match=r"^train.grpo.num_train_steps 4 exceeds the 3"):
        method_for(cfg).check(cfg, RolloutConfig(num_steps=4))
    with pytest.raises(ValueError, match="num_train_steps is not set"):
        TrainConfig(method="grpo", inversion=False, grpo={"steps": "random"})
    refl = TrainConfig(method="refl", inversion=False, grpo={})  # the registry row refuses it, not the config
    with pytest.raises(ValueError, match=r"^train.grpo is set but train.method is 'refl'"):
        check_method(refl, ROLLOUT)


@pytest.mark.parametrize("family", ["qwen-image", "sd3", "flux2", "flux2-klein", "z-image"])
def test_a_grpo_update_trains_every_family_through_the_policy_interface(family_setups, family):
    """The SDE sampler, the log-probabilities and the clipped objective through each family's adapter
    (its guidance and packing): finite log-probabilities, a normalised group, weights that move."""
    policy_cfg, rollouts = family_setups(family)
    trainer = make_trainer(load_policy(policy_cfg), rollouts, grpo={"steps": "first", "num_train_steps": 1,
                                                                             "group_size": 2})
    before = weights(trainer)
    groups = trainer.method.sample(trainer.ctx, 0)
    assert bool(torch.isfinite(groups.log_probs[:-1]).all())
    torch.testing.assert_close(groups.advantages.reshape(2, 2).mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    log = trainer.train_step(0)
    assert not log.skipped and math.isfinite(log.loss)
    assert any(not torch.equal(before[n], p) for n, p in weights(trainer).items())


def test_the_kl_reference_of_a_resumed_full_run_is_the_base(base, rollouts, tmp_path):
    """Full fine-tuning keeps the base weights as the KL's reference, taken before a resume loads trained ones."""
    initial = weights(make_trainer(base(), rollouts))
    make_trainer(base(), rollouts, steps=1, checkpoint_every=1, checkpoint_dir=str(tmp_path), grpo={"kl": 0.1}).train()
    resumed = make_trainer(base(), rollouts, steps=1, checkpoint_dir=str(tmp_path), grpo={"kl": 0.1})
    assert resumed.resume() == 1
    reference = dict(zip(resumed.method.reference.copy.names, resumed.method.reference.copy.values))
    assert all(torch.equal(reference[n], initial[n]) for n in initial)
    assert any(not torch.equal(p, initial[n]) for n, p in weights(resumed).items())  # the resumed weights moved
