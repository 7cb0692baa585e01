"""Reward terms of every kind and the weighted multi-reward: forms, branches, weights, loading once."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.combine import MultiReward, RewardTerm, load_multi_reward, term_reward
from srpo.rewards.config import MultiRewardConfig, WeightedRewardConfig
from srpo.srp import semantic_reward, semantic_reward_from_scores, with_control

PROMPTS = ["a red circle on a blue background", "a dog"]
FORMS = ["plain", "sgp", "srp", "cfg", "weighted"]


class JointView(torch.nn.Module):
    """A feature reward seen only through ``score`` (as a joint reward like HPSv3 is)."""

    is_joint = True

    def __init__(self, reward) -> None:
        super().__init__()
        self.inner = reward

    def score(self, images, prompts):
        return self.inner.score(images, prompts)


@pytest.fixture(scope="module")
def clip():
    mp = pytest.MonkeyPatch()
    import tempfile

    mp.setenv("SRPO_CACHE", tempfile.mkdtemp(prefix="srpo-combine-"))
    try:
        yield load_reward(RewardConfig(name="hf_clip", checkpoint="builtin:tiny"))
    finally:
        mp.undo()


def _term(reward, form, **kw):
    return RewardTerm(name="t", reward=reward, form=form, positive_words=["Real", "Detail"],
                      negative_words=["Painting", "Anime"], **kw)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", ["denoise", "inversion"])
def test_joint_scores_give_the_same_forms_as_features(clip, form, branch):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(branch=branch, step=1, sigma=0.6, sigma_lo=0.2, sigma_hi=0.9)
    by_features = term_reward(_term(clip, form), images, PROMPTS, **kw)
    by_scores = term_reward(_term(JointView(clip), form), images, PROMPTS, **kw)
    assert torch.allclose(by_features, by_scores, atol=1e-5)


def test_branch_words_step_and_k_follow_the_trainer_rules(clip):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    term = _term(clip, "weighted", k_denoise=(0.1, 0.3), k_inversion=(0.5, 0.0))
    img = clip.image_features(images)
    step, lo, hi, sigma = 3, 0.2, 0.8, 0.8  # step 3: the second word of each list; sigma at the top: k_end
    pos = clip.text_features(with_control("Detail", PROMPTS))
    neg = clip.text_features(with_control("Anime", PROMPTS))
    denoise = term_reward(term, images, PROMPTS, branch="denoise", step=step, sigma=sigma, sigma_lo=lo, sigma_hi=hi)
    inversion = term_reward(term, images, PROMPTS, branch="inversion", step=step, sigma=sigma, sigma_lo=lo, sigma_hi=hi)
    assert torch.allclose(denoise, semantic_reward("weighted", img, None, pos, neg, k=0.3), atol=1e-6)
    assert torch.allclose(inversion, semantic_reward("weighted", img, None, neg, pos, k=0.0), atol=1e-6)
    with pytest.raises(ValueError, match="branch"):
        term_reward(term, images, PROMPTS, branch="sideways")


@pytest.mark.parametrize("joint", [False, True])
def test_a_plain_term_is_a_penalty_on_the_inversion_branch(clip, joint):
    """No words to swap: the inversion branch minimises it (maximising it there would undo the denoise branch)."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    term = _term(JointView(clip) if joint else clip, "plain")
    denoise = term_reward(term, images, PROMPTS, branch="denoise")
    assert torch.allclose(term_reward(term, images, PROMPTS, branch="inversion"), -denoise)
    assert torch.allclose(denoise, clip.scale * (clip.image_features(images) * clip.text_features(PROMPTS)).sum(-1),
                          atol=1e-6)


def test_multi_reward_is_the_weighted_sum_and_reports_each_part(clip):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    a, b = _term(clip, "srp"), _term(clip, "plain")
    a.name, a.weight, b.name, b.weight = "hps-like", 0.7, "plain", -0.2
    total, parts = MultiReward([a, b])(images, PROMPTS, branch="denoise", step=0)
    assert set(parts) == {"hps-like", "plain"}
    assert torch.allclose(total, 0.7 * parts["hps-like"] - 0.2 * parts["plain"])
    (grad,) = torch.autograd.grad(total.sum(), images)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unique"):
        MultiReward([a, a])


def test_a_model_named_twice_is_loaded_once(private_cache):
    calls = []

    def loader(cfg, device="cpu", dtype=torch.float32):
        calls.append(cfg.name)
        return load_reward(cfg, device=device, dtype=dtype)

    hps = RewardConfig(name="clip", checkpoint="builtin:tiny")
    config = MultiRewardConfig(rewards=[
        WeightedRewardConfig(reward=hps, name="hps-a", positive_words=["Real"], negative_words=["Painting"]),
        WeightedRewardConfig(reward=hps, name="hps-b", positive_words=["Detail"], negative_words=["Anime"]),
        WeightedRewardConfig(reward=RewardConfig(name="hf_clip", checkpoint="builtin:tiny"), form="plain", weight=0.5),
    ])
    multi = load_multi_reward(config, loader=loader)
    assert calls == ["clip", "hf_clip"]
    assert len(multi.models) == 2 and multi.terms[0].reward is multi.terms[1].reward
    assert [t.name for t in multi.terms] == ["hps-a", "hps-b", "hf_clip-2"]


def test_scores_forms_name_what_is_missing():
    s = torch.ones(2)
    with pytest.raises(ValueError, match="needs the other score"):
        semantic_reward_from_scores("srp", s, s, None)
    with pytest.raises(ValueError, match="unknown reward form"):
        semantic_reward_from_scores("bogus", s, s, s)


def test_entry_config_rules():
    aesthetic = RewardConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny")
    with pytest.raises(ValidationError, match="reads no text: use form 'image_relative'"):
        WeightedRewardConfig(reward=aesthetic, form="weighted", positive_words=["a"], negative_words=["b"])
    assert WeightedRewardConfig(reward=aesthetic, form="image_relative").noise_level == 0.05
    with pytest.raises(ValidationError, match="image-only rewards"):
        WeightedRewardConfig(reward=RewardConfig(name="clip"), form="image_relative")
    with pytest.raises(ValidationError, match="needs negative_words"):
        WeightedRewardConfig(reward=RewardConfig(name="clip"), form="srp", positive_words=["a"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        WeightedRewardConfig(reward=RewardConfig(name="clip"), form="plain", wieght=2)
    with pytest.raises(ValidationError, match="unique"):
        MultiRewardConfig(rewards=[WeightedRewardConfig(reward=RewardConfig(name="clip"), form="plain", name="x")] * 2)
    with pytest.raises(ValidationError):
        MultiRewardConfig(rewards=[])
