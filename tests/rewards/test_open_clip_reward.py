"""open_clip rewards (HPS v2.1, CLIP): checkpoint loading, refusals, features, tokenizer."""

from __future__ import annotations

import json
import pickle

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from srpo.models.tokenizers import clip_tokenizer
from srpo.rewards import RewardConfig, load_reward, preprocess_for_clip
from srpo.rewards.open_clip_reward import (TINY_ARCHITECTURE, TINY_CONFIG, OpenClipReward, create_open_clip_model,
                                           use_sequence_first_attention)

PROMPTS = ["a red circle on a blue background", "Photo of a cat, 4K, highly-detailed!"]


class NotATensor:
    """A picklable object that ``torch.load(weights_only=True)`` must refuse."""


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return create_open_clip_model(TINY_ARCHITECTURE)


def _config(checkpoint, **kwargs) -> RewardConfig:
    return RewardConfig(name="clip", architecture=TINY_ARCHITECTURE, checkpoint=str(checkpoint), **kwargs)


def test_sequence_first_attention_gives_the_same_features_and_gradients(tiny_model):
    batch_first = create_open_clip_model(TINY_ARCHITECTURE)
    batch_first.load_state_dict(tiny_model.state_dict())
    seq_first = use_sequence_first_attention(tiny_model)
    attn = [m for m in seq_first.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert attn and not any(m.batch_first for m in attn)  # vision and text towers alike
    assert all(m.batch_first for m in batch_first.modules() if isinstance(m, torch.nn.MultiheadAttention))
    pixels = torch.randn(3, 3, 32, 32, requires_grad=True)
    tokens = open_clip.get_tokenizer(TINY_ARCHITECTURE)(PROMPTS + ["x"])
    outputs = []
    for model in (batch_first, seq_first):
        image = model.encode_image(pixels)  # [3, D]
        (grad,) = torch.autograd.grad(image.square().sum(), pixels)
        outputs.append((image, grad, model.encode_text(tokens)))
    for a, b in zip(*outputs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    reward = OpenClipReward(create_open_clip_model(TINY_ARCHITECTURE), None, architecture=TINY_ARCHITECTURE)
    assert not any(m.batch_first for m in reward.backbone.modules() if isinstance(m, torch.nn.MultiheadAttention))


def test_hps_style_checkpoint_loads_the_same_model(tiny_model, tmp_path):
    path = tmp_path / "HPS_v2.1_tiny.pt"
    torch.save({"state_dict": tiny_model.state_dict()}, path)
    reward = load_reward(_config(path))

    images = torch.rand(2, 3, 40, 48)
    pixels = preprocess_for_clip(images, 32, reward.mean, reward.std)
    tokens = open_clip.get_tokenizer(TINY_ARCHITECTURE)(PROMPTS)
    with torch.no_grad():
        want_img = F.normalize(tiny_model.encode_image(pixels), dim=-1)
        want_txt = F.normalize(tiny_model.encode_text(tokens), dim=-1)
        torch.testing.assert_close(reward.image_features(images), want_img)
        torch.testing.assert_close(reward.text_features(PROMPTS), want_txt)
        torch.testing.assert_close(reward.score(images, PROMPTS), (want_img * want_txt).sum(-1))
    assert reward.scale == 1.0 and reward.architecture == TINY_ARCHITECTURE


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_bare_state_dicts_load(tiny_model, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    state_dict = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(state_dict, str(path)) if suffix == ".safetensors" else torch.save(state_dict, path)
    reward = load_reward(_config(path, scale=2.5))
    for name, tensor in reward.backbone.state_dict().items():
        assert torch.equal(tensor, state_dict[name]), name
    assert reward.scale == 2.5


def test_pickled_objects_are_refused(tiny_model, tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": tiny_model.state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match="pickled") as info:
        load_reward(_config(path))
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


def test_wrong_architecture_names_it_and_the_keys(tiny_model, tmp_path):
    other = json.loads(json.dumps(TINY_CONFIG))
    other["vision_cfg"]["layers"] = 3
    other["text_cfg"]["width"] = 32
    config_path = tmp_path / "srpo-test-other-ViT.json"
    config_path.write_text(json.dumps(other))
    open_clip.add_model_config(config_path)

    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny_model.state_dict()}, path)
    with pytest.raises(ValueError) as info:
        load_reward(RewardConfig(name="clip", architecture="srpo-test-other-ViT", checkpoint=str(path)))
    message = str(info.value)
    assert "srpo-test-other-ViT" in message
    assert "missing keys" in message and "visual.transformer.resblocks.2." in message
    assert "shape mismatches" in message


def test_unknown_architecture(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({}, path)
    with pytest.raises(ValueError, match="open_clip.list_models"):
        load_reward(RewardConfig(name="clip", architecture="ViT-Nonexistent", checkpoint=str(path)))


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "HPS_v2.1_compressed.pt"
    with pytest.raises(FileNotFoundError, match="HPS_v2.1_compressed.pt") as info:
        load_reward(RewardConfig(name="hpsv2.1", checkpoint=str(path)))
    assert "builtin:tiny" in str(info.value)


def test_no_checkpoint_says_what_to_give():
    with pytest.raises(ValueError, match="needs a checkpoint"):
        load_reward(RewardConfig(name="hpsv2.1"))


def test_non_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_reward(_config(path))


def test_open_clip_and_offline_hf_tokenizers_agree():
    prompt = "A photo of an astronaut riding a horse on Mars, 8k, trending on ArtStation!!"
    open_clip_ids = open_clip.get_tokenizer("ViT-H-14")([prompt])[0]  # [77], padded with 0
    hf_ids = clip_tokenizer()(prompt)["input_ids"]
    assert open_clip_ids[: len(hf_ids)].tolist() == hf_ids
    assert (open_clip_ids[len(hf_ids):] == 0).all()
