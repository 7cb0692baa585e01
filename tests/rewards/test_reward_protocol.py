"""The reward protocol on every reward's builtin:tiny model: frozen, differentiable, cached."""

from __future__ import annotations

import pytest
import torch

from srpo.cache import PromptCache
from srpo.io import build_once
from srpo.rewards import FEATURE_REWARDS, RewardConfig, RewardModel, load_reward

PROMPTS = ["a red circle", "a blue square", "a red circle"]


@pytest.fixture(scope="module", params=FEATURE_REWARDS)  # joint / image-only: test_hpsv3_reward, test_image_only
def reward(request, tmp_path_factory) -> RewardModel:
    """One builtin:tiny model per reward name, shared by this module's tests (built in a private cache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SRPO_CACHE", str(tmp_path_factory.mktemp("srpo-cache")))
        return load_reward(RewardConfig(name=request.param, checkpoint="builtin:tiny"))


def test_features_are_normalised_and_scores_match(reward):
    images = torch.rand(3, 3, 40, 48)
    img, txt = reward.image_features(images), reward.text_features(PROMPTS)
    assert img.shape == txt.shape and img.shape[0] == 3
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    score = reward.score(images, PROMPTS)
    assert score.shape == (3,)
    torch.testing.assert_close(score, reward.scale * (img * txt).sum(-1))


def test_gradient_reaches_images_but_not_the_reward(reward):
    images = torch.rand(2, 3, 48, 40).mul(0.8).add(0.1).requires_grad_(True)
    reward.score(images, PROMPTS[:2]).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in reward.parameters())


def test_stays_frozen_in_eval_mode(reward):
    reward.train()
    assert not reward.training and not any(m.training for m in reward.modules())


def test_text_features_are_cached(reward, monkeypatch):
    first = reward.text_features(PROMPTS)
    assert torch.equal(first[0], first[2])  # a repeated prompt is encoded once
    assert not first.requires_grad

    def fail(prompts):
        raise AssertionError(f"encoded again: {prompts}")

    monkeypatch.setattr(reward, "encode_prompts", fail)
    assert torch.equal(reward.text_features(PROMPTS), first)
    assert torch.equal(reward.text_features(PROMPTS[1:2]), first[1:2])


def test_the_text_cache_never_drops_a_prompt_it_is_returning(reward, monkeypatch):
    """Least recently used goes first; a full cache evicts only after the answer is built."""
    monkeypatch.setattr(reward, "max_cached_prompts", 3)
    monkeypatch.setattr(reward, "_text_cache", PromptCache(3))
    want = {p: reward.encode_prompts([p]) for p in "abcde"}
    reward.text_features(["a", "b", "c"])
    reward.text_features(["a"])  # a is now the most recently used: b goes first
    out = reward.text_features(["a", "d", "e"])  # a cached, d and e new: evicts b and c, never a
    assert list(reward._text_cache) == ["a", "d", "e"]
    for row, p in zip(out, "ade"):
        torch.testing.assert_close(row, torch.nn.functional.normalize(want[p], dim=-1)[0])


def test_one_prompt_per_image(reward):
    with pytest.raises(ValueError, match="one prompt per image"):
        reward.score(torch.rand(2, 3, 32, 32), ["only one"])
    with pytest.raises(TypeError, match="sequence of prompts"):
        reward.text_features("a single string")


@pytest.mark.parametrize("name", ["clip", "hf_clip"])
def test_dtype_and_cache_follow_the_model(name):
    reward = load_reward(RewardConfig(name=name, checkpoint="builtin:tiny"), dtype=torch.float64)
    assert reward.dtype == torch.float64
    assert reward.score(torch.rand(1, 3, 32, 32), ["a dog"]).dtype == torch.float64
    reward.to(torch.float32)  # the cached float64 features are dropped
    assert reward.text_features(["a dog"]).dtype == torch.float32


def test_builtin_is_built_once_and_seeded(private_cache):
    load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny", seed=1))
    weights = private_cache / "builtin" / "clip-tiny-1" / "open_clip_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny", seed=1))
    other = load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny", seed=2))
    assert weights.stat().st_mtime_ns == stamp
    assert not [p for p in (private_cache / "builtin").iterdir() if p.name.startswith(".")]
    image = torch.rand(1, 3, 32, 32)
    assert not torch.equal(again.image_features(image), other.image_features(image))


def test_build_once_leaves_nothing_after_a_crash(tmp_path):
    target = tmp_path / "builtin" / "model"

    def crash(folder):
        (folder / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("crash while building")

    with pytest.raises(RuntimeError):
        build_once(target, crash)
    assert list((tmp_path / "builtin").iterdir()) == []
    assert build_once(target, lambda folder: (folder / "ok").write_text("ok")) == target
    assert (target / "ok").read_text() == "ok"
