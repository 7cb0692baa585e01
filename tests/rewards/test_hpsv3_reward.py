"""HPSv3 on a tiny Qwen2-VL: in-graph preprocessing vs transformers' processor, gradients, loading."""

from __future__ import annotations

import fsspec
import pytest
import torch
from transformers import Qwen2VLImageProcessor

from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.hpsv3_reward import (AUTHOR_WEIGHTS, HEAD_FILE, REWARD_TOKEN, TINY_PIXELS, HPSv3Reward, build_tiny_hpsv3,
                                       qwen2vl_pixel_values)

PROMPTS = ["a red circle on a blue background", "bright. a green square"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The builtin tiny HPSv3 folder, built once for the module into its own cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SRPO_CACHE", str(tmp_path_factory.mktemp("hpsv3-cache")))
    try:
        yield build_tiny_hpsv3(seed=0)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def reward64(tiny_dir):
    """The tiny reward in float64, so finite differences are exact enough to check gradients."""
    return load_reward(RewardConfig(name="hpsv3", checkpoint=str(tiny_dir)), dtype=torch.float64)


def reference(images: torch.Tensor, pixels: int = TINY_PIXELS):
    """transformers' (non-differentiable) Qwen2-VL image processor on ``[B, 3, H, W]`` floats in [0, 1]."""
    proc = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, do_rescale=False)
    out = proc(images=list(images.detach().float()), return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


@pytest.mark.parametrize("size", [(56, 56), (70, 90), (120, 40)])
def test_in_graph_preprocessing_matches_the_reference_processor(size):
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    ref_pixels, ref_grid = reference(images)
    pixels, grid = qwen2vl_pixel_values(images, patch_size=14, merge_size=2, temporal_patch_size=2,
                                        min_pixels=TINY_PIXELS, max_pixels=TINY_PIXELS)
    assert torch.equal(grid, ref_grid)
    assert pixels.shape == ref_pixels.shape
    assert torch.allclose(pixels, ref_pixels, atol=1e-4)


def test_score_and_gradient_match_the_reference_path(reward64):
    images = torch.rand(2, 3, 70, 90, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    images.requires_grad_(True)
    scores = reward64.score(images, PROMPTS)  # [2]
    ref_pixels, ref_grid = reference(images)
    with torch.no_grad():
        ref_scores = reward64.score_pixels(ref_pixels.double(), ref_grid, PROMPTS)
    assert torch.allclose(scores, ref_scores, atol=1e-5)
    assert scores[0] != scores[1]
    (grad,) = torch.autograd.grad(scores.sum(), images)
    # the directional derivative through the reference preprocessing, by central differences
    direction = torch.randn(images.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-3
    with torch.no_grad():
        up = reward64.score_pixels(*_double(reference(images + eps * direction)), PROMPTS).sum()
        down = reward64.score_pixels(*_double(reference(images - eps * direction)), PROMPTS).sum()
    numeric = (up - down) / (2 * eps)
    analytic = (grad * direction).sum()
    assert abs(numeric - analytic) < 1e-3 * max(1.0, abs(float(analytic)))
    assert abs(analytic) > 0


def _double(pair):
    return pair[0].double(), pair[1]


def test_gradient_reaches_every_image_and_only_its_own(reward64):
    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(4), dtype=torch.float64,
                        requires_grad=True)
    scores = reward64.score(images, PROMPTS)
    (grad,) = torch.autograd.grad(scores[0], images)
    assert grad[0].abs().sum() > 0 and (grad[0] != 0).float().mean() > 0.9  # nearly every pixel moves
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))  # the second image does not affect the first score
    assert not any(p.requires_grad for p in reward64.parameters())
    reward64.train()
    assert not reward64.training


def test_save_load_round_trip_through_a_folder_and_a_url(reward64, tmp_path):
    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = reward64.score(images, PROMPTS)
    folder = reward64.save_pretrained(tmp_path / "saved")
    again = load_reward(RewardConfig(name="hpsv3", checkpoint=str(folder)), dtype=torch.float64)
    assert torch.allclose(again.score(images, PROMPTS), expected, atol=1e-10)
    fs = fsspec.filesystem("memory")
    for path in folder.iterdir():
        fs.pipe(f"/hpsv3-url/{path.name}", path.read_bytes())
    remote = load_reward(RewardConfig(name="hpsv3", checkpoint="memory://hpsv3-url"), dtype=torch.float64)
    assert torch.allclose(remote.score(images, PROMPTS), expected, atol=1e-10)


def test_the_authors_checkpoint_layout_loads_to_the_same_scores(reward64, tiny_dir, tmp_path):
    """HPSv3.safetensors as transformers 4.45 wrote it: ``visual.*``, ``model.*`` (the LM), ``lm_head``, ``rm_head``."""
    from safetensors.torch import save_file

    state = {}
    for key, value in reward64.backbone.state_dict().items():
        key = key.replace("model.visual.", "visual.", 1).replace("model.language_model.", "model.", 1)
        state[key] = value.float().contiguous()
    state["lm_head.weight"] = torch.zeros_like(state["model.embed_tokens.weight"])
    folder = tmp_path / "authors"
    folder.mkdir()
    save_file(state, str(folder / AUTHOR_WEIGHTS[0]))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", HEAD_FILE):  # head: the tiny's 56 x 56
        (folder / name).write_bytes((tiny_dir / name).read_bytes())
    loaded = load_reward(RewardConfig(name="hpsv3", checkpoint=str(folder)), dtype=torch.float64)
    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.allclose(loaded.score(images, PROMPTS), reward64.score(images, PROMPTS), atol=1e-5)


def test_builtin_tiny_and_its_protocol(private_cache):
    reward = load_reward(RewardConfig(name="hpsv3", checkpoint="builtin:tiny"))
    assert isinstance(reward, HPSv3Reward) and reward.is_joint
    assert reward.tokenizer.convert_tokens_to_ids(REWARD_TOKEN) == reward.reward_token_id
    assert (private_cache / "builtin" / "hpsv3-tiny-0" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="one prompt per image"):
        reward.score(torch.rand(2, 3, 56, 56), ["only one"])


def test_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds none of"):
        load_reward(RewardConfig(name="hpsv3", checkpoint=str(tmp_path / "empty")))


def test_config_rules_for_hpsv3():
    with pytest.raises(ValueError, match="architecture is only used by open_clip"):
        RewardConfig(name="hpsv3", architecture="ViT-H-14")
    dumped = RewardConfig(name="hpsv3", checkpoint="builtin:tiny").model_dump()
    assert "architecture" not in dumped and RewardConfig(**dumped).name == "hpsv3"


def test_hpsv3_and_aesthetic_score_as_evaluation_metrics(private_cache):
    """As `extra_rewards`, both are scored by the evaluation suite like any training reward."""
    from srpo.evaluation.suite import build_metrics

    metrics = build_metrics(extra_rewards={"hpsv3": RewardConfig(name="hpsv3", checkpoint="builtin:tiny"),
                                           "aesthetic": RewardConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny")})
    images = torch.rand(2, 3, 56, 56)
    for name in ("hpsv3", "aesthetic"):
        scores = metrics[name].score(images, PROMPTS)
        assert scores.shape == (2,) and torch.isfinite(scores).all()
