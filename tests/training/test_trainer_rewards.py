"""The trainer against rewards of every kind: a weighted multi-reward, a joint reward (HPSv3) and
an image-only one (Aesthetic v2.5, supplement S1's relative form), through the same update."""

import json

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.combine import MultiReward, RewardTerm, single_term_reward
from srpo.rewards.config import MultiRewardConfig, RewardUse, WeightedRewardConfig, check_trainable
from srpo.training.job import run_job, write_job
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)
BASE = {"steps": 2, "batch_size": 2, "learning_rate": 1e-3, "max_grad_norm": 1.0, "num_injections": 2,
        "discount": "linear"}


@pytest.fixture(scope="module")
def clip():
    return load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))


def train(policy_cfg, reward, rollouts, **overrides):
    trainer = SRPOTrainer(load_policy(policy_cfg), reward, rollouts, TrainConfig(**{**BASE, **overrides}), ROLLOUT)
    history = trainer.train()
    return trainer, history, {k: v.detach().clone() for k, v in trainer.policy.transformer.state_dict().items()}


def test_a_feature_reward_as_one_term_trains_bit_for_bit_like_the_feature_path(policy_cfg, clip, rollouts):
    """The multi-reward path (words, k at each branch's level, scale) re-derives the single-reward update."""
    cfg = TrainConfig(**BASE)
    use = RewardUse(form=cfg.reward_form, **cfg.model_dump(include=set(RewardUse.model_fields) - {"weight", "form"}))
    _, plain_log, plain = train(policy_cfg, clip, rollouts)
    trainer, term_log, termed = train(policy_cfg, single_term_reward(clip, use), rollouts)
    assert trainer.objective.terms is not None and term_log[0].terms is not None
    assert [h.reward for h in term_log] == [h.reward for h in plain_log]
    assert [h.inversion_reward for h in term_log] == [h.inversion_reward for h in plain_log]
    assert all(torch.equal(plain[k], termed[k]) for k in plain)


def test_content_weight_trains_like_a_plain_multi_reward_term(policy_cfg, clip, rollouts):
    """train.content_weight on the fast path is the run's form plus a plain term (its inversion penalty -r):
    the same update as that two-term multi-reward, and another update than without it."""
    cfg = TrainConfig(**BASE, content_weight=0.5)
    use = RewardUse(form=cfg.reward_form, **cfg.model_dump(include=set(RewardUse.model_fields) - {"weight", "form"}))
    terms = MultiReward([*single_term_reward(clip, use).terms,
                         RewardTerm(name="content", reward=clip, form="plain", weight=0.5)])
    _, fast_log, fast = train(policy_cfg, clip, rollouts, content_weight=0.5)
    _, term_log, termed = train(policy_cfg, terms, rollouts)
    _, _, without = train(policy_cfg, clip, rollouts)
    assert [h.reward for h in fast_log] == pytest.approx([h.reward for h in term_log], rel=1e-5)
    assert [h.inversion_reward for h in fast_log] == pytest.approx([h.inversion_reward for h in term_log], rel=1e-5)
    assert all(torch.allclose(fast[k], termed[k], atol=1e-6) for k in fast)
    assert not all(torch.allclose(fast[k], without[k], atol=1e-6) for k in fast)
    with pytest.raises(ValueError, match="content_weight 0.5 .*rewards: block: add a plain entry"):
        train(policy_cfg, terms, rollouts, content_weight=0.5)
    with pytest.raises(ValueError, match="content_weight 0.5 adds .* reward_form is 'plain'"):
        TrainConfig(**BASE, reward_form="plain", inversion=False, content_weight=0.5)


def test_multi_reward_loss_is_the_weighted_sum_and_each_term_is_logged(policy_cfg, clip, rollouts):
    hf = load_reward(RewardConfig(name="hf_clip", checkpoint="builtin:tiny"))
    terms = MultiReward([
        RewardTerm(name="clip-real", reward=clip, weight=1.0, positive_words=["Real"], negative_words=["Painting"]),
        RewardTerm(name="clip-detail", reward=clip, weight=0.5, positive_words=["Detail"], negative_words=["Anime"],
                   k_denoise=(0.0, 0.5)),
        RewardTerm(name="hf", reward=hf, weight=2.0, form="srp", positive_words=["Real"], negative_words=["Flat"]),
    ])
    trainer, history, after = train(policy_cfg, terms, rollouts)
    weights = {t.name: t.weight for t in terms.terms}
    for h in history:
        assert set(h.terms) == set(weights)
        assert h.reward == pytest.approx(sum(weights[n] * v for n, v in h.terms.items()), rel=1e-5, abs=1e-6)
    assert history[0].terms["clip-real"] != history[0].terms["clip-detail"]  # each term reads its own words
    assert len(trainer.objective.reward_models) == 2  # the CLIP both terms use is one model


def test_a_joint_reward_trains_through_its_scores(policy_cfg, rollouts):
    """HPSv3 (a tiny Qwen2-VL of the same architecture): SRP on its text side, gradient to the transformer."""
    hps = load_reward(RewardConfig(name="hpsv3", checkpoint="builtin:tiny"))
    policy = load_policy(policy_cfg)
    before = {k: v.detach().clone() for k, v in policy.transformer.state_dict().items()}
    trainer = SRPOTrainer(policy, hps, rollouts, TrainConfig(**{**BASE, "steps": 1, "num_injections": 1}), ROLLOUT)
    (log,) = trainer.train()
    assert trainer.objective.terms is not None and list(log.terms) == ["reward"]
    assert log.grad_norm > 0 and not log.skipped and log.inversion_reward is not None
    changed = [k for k, v in policy.transformer.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_image_only_relative_reward_trains_both_branches_and_is_seeded(policy_cfg, rollouts):
    aesthetic = load_reward(RewardConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny"))
    opts = {"reward_form": "image_relative", "noise_level": 0.05, "positive_words": [], "negative_words": [],
            "steps": 1}
    _, first, a = train(policy_cfg, aesthetic, rollouts, **opts)
    _, again, b = train(policy_cfg, aesthetic, rollouts, **opts)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the noised copy's noise is seeded per sample
    assert first[0].inversion_reward is not None and first[0].grad_norm > 0
    _, other, _ = train(policy_cfg, aesthetic, rollouts, **{**opts, "noise_level": 0.2})
    assert other[0].reward != first[0].reward  # the noise level is read


def test_grpo_scores_its_groups_with_the_weighted_sum(policy_cfg, clip, rollouts):
    """grpo reads a multi-reward too (denoise branch): each member's image-relative noise is its own."""
    aesthetic = load_reward(RewardConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny"))
    terms = MultiReward([RewardTerm(name="clip", reward=clip, positive_words=["Real"], negative_words=["Painting"]),
                         RewardTerm(name="aesthetic", reward=aesthetic, weight=0.5, form="image_relative")])
    cfg = TrainConfig(method="grpo", inversion=False, steps=1, batch_size=2, learning_rate=1e-3, max_grad_norm=1.0,
                      grpo={"group_size": 2, "clip_range": 0.2})
    trainer = SRPOTrainer(load_policy(policy_cfg), terms, rollouts, cfg, ROLLOUT)
    groups = trainer.method.sample(trainer.ctx, 0)
    images = trainer.policy.decode(groups.latents[-1])
    with torch.no_grad():
        by_hand, _ = terms(images, groups.prompts, branch="denoise", step=0, sigma=trainer.objective.grid_bounds[0],
                           sigma_lo=trainer.objective.grid_bounds[0], sigma_hi=trainer.objective.grid_bounds[1],
                           noise=lambda: torch.zeros_like(images))
    assert groups.rewards.shape == (4,) and torch.isfinite(groups.rewards).all()
    assert not torch.allclose(groups.rewards, by_hand)  # the relative term's noise was drawn, not zero
    (log,) = trainer.train()
    assert not log.skipped


def test_reward_forms_that_do_not_fit_the_reward_are_refused(policy_cfg, clip, rollouts):
    with pytest.raises(ValueError, match="image_relative' is for image-only rewards"):
        SRPOTrainer(load_policy(policy_cfg), clip, rollouts,
                    TrainConfig(**BASE, reward_form="image_relative", inversion=False), ROLLOUT)
    with pytest.raises(ValueError) as info:
        check_trainable(RewardConfig(name="aesthetic_v2.5"), "weighted")
    assert str(info.value).startswith("reward.name 'aesthetic_v2.5' reads no text, so reward form 'weighted'")
    assert "image_relative" in str(info.value).splitlines()[0]
    with pytest.raises(ValueError, match="is for image-only rewards"):
        check_trainable(RewardConfig(name="hpsv3"), "image_relative")
    check_trainable(RewardConfig(name="hpsv3"), "weighted")
    check_trainable(RewardConfig(name="aesthetic_v2.5"), "image_relative")


def test_a_job_with_rewards_loads_a_shared_model_once_and_logs_each_term(policy_cfg, rollouts, tmp_path, monkeypatch):
    import srpo.rewards as rewards_module

    calls = []
    real = rewards_module.load_reward
    # the loads of the run (on its device); the memory plan's measuring loads of a builtin reward are not counted
    monkeypatch.setattr(rewards_module, "load_reward",
                        lambda cfg, **kw: ("device" in kw and calls.append(cfg.name)) or real(cfg, **kw))
    clip_cfg = RewardConfig(name="clip", checkpoint="builtin:tiny")
    multi = MultiRewardConfig(rewards=[
        WeightedRewardConfig(name="a", reward=clip_cfg, positive_words=["Real"], negative_words=["Painting"]),
        WeightedRewardConfig(name="b", reward=clip_cfg, weight=0.5, positive_words=["Detail"], negative_words=["Oil"]),
    ])
    job = write_job(tmp_path / "job", policy_cfg, clip_cfg, ROLLOUT, TrainConfig(**{**BASE, "steps": 1}), rollouts,
                    rewards=multi)
    run_job(job, tmp_path / "out")
    assert calls == ["clip"]  # `reward:` and both entries: one model
    history = json.loads((tmp_path / "out" / "training_log.json").read_text())["history"]
    assert set(history[0]["terms"]) == {"a", "b"}
