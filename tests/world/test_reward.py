"""The world's CLIP reward: trains, saves in the hf_clip layout, loads through the library's adapter."""

import pytest
import torch

from srpo.rewards import RewardConfig, load_reward
from srpo.world.reward import (RewardTrainConfig, attribute_ranking, blocks, save_reward, saturation_preference,
                               swapped_caption, train_reward)
from srpo.world.shapes import draw, parse_prompt, sample_scenes

TINY = dict(width=32, layers=1, projection_dim=16, steps=40, batch_size=16, pool_size=128, learning_rate=3e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model, curve = train_reward(RewardTrainConfig(**TINY))
    folder = save_reward(model, tmp_path_factory.mktemp("reward") / "shapes-clip")
    return folder, curve


def test_trains_saves_and_loads_through_the_hf_clip_adapter(trained):
    folder, curve = trained
    assert sum(curve[-5:]) < sum(curve[:5])
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=str(folder)))
    images, _, scenes = draw(32, seed=99)
    ranks = attribute_ranking(reward, images, scenes)
    assert set(ranks) == {"brightness", "saturation", "fg", "bg", "shape"}
    assert all(0.0 <= v <= 1.0 for v in ranks.values())
    images.requires_grad_(True)
    reward.score(images, scenes.base_prompts()).sum().backward()
    assert images.grad.abs().sum() > 0  # differentiable in the pixels, as SRPO needs


def test_hard_negatives_change_exactly_one_attribute():
    scenes = sample_scenes(200, seed=3)
    g = torch.Generator().manual_seed(0)
    for i in range(len(scenes)):
        words = scenes.words("brightness")[i:i + 1]
        neg = parse_prompt(swapped_caption(scenes, i, list(words), g))
        true = {"shape": int(scenes.shape[i]), "fg": int(scenes.fg[i]), "bg": int(scenes.bg[i]),
                "brightness": bool(scenes.bright[i])}
        diffs = [k for k in ("shape", "fg", "bg") if neg[k] != true[k]]
        diffs += [k for k in ("brightness", "saturation") if k in neg and k in true and neg[k] != true[k]]
        diffs += ["saturation"] if "saturation" in neg and neg["saturation"] != bool(scenes.vivid[i]) else []
        assert diffs and neg["fg"] != neg["bg"]


def test_planted_bias_makes_the_reward_prefer_vivid_renderings(tmp_path):
    cfg = RewardTrainConfig(**{**TINY, "steps": 30, "bias": "saturation", "bias_weight": 3.0, "rank_weight": 0.0})
    model, _ = train_reward(cfg)
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=str(save_reward(model, tmp_path / "biased"))))
    scenes = sample_scenes(64, seed=8)
    assert saturation_preference(reward, scenes) > 0.8


def test_block_augmentation_is_the_vae_view():
    images, _, _ = draw(2, seed=1)
    out = blocks(images)
    assert out.shape == images.shape
    assert torch.allclose(out[..., :8, :8], images[..., :8, :8].mean((2, 3), keepdim=True).expand(-1, -1, 8, 8))
