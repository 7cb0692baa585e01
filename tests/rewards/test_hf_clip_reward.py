"""transformers rewards (PickScore, CLIP): loading a saved folder, scores by hand, sources."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from srpo.models.tokenizers import clip_tokenizer
from srpo.rewards import CLIP_MEAN, CLIP_STD, RewardConfig, load_reward, preprocess_for_clip
from srpo.io import resolve_model_location
from srpo.rewards.hf_clip_reward import HFClipReward, tiny_clip_config

PROMPTS = ["a red circle on a blue background", "a dog"]


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny CLIP saved by the test, with a non-default temperature and no tokenizer files."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = CLIPModel(tiny_clip_config())
    with torch.no_grad():
        model.logit_scale.fill_(math.log(50.0))
    folder = tmp_path / "tiny-clip"
    model.save_pretrained(folder)
    return folder


def _cosine_by_hand(folder, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, float]:
    model = CLIPModel.from_pretrained(folder).eval()
    pixels = preprocess_for_clip(images, 32, CLIP_MEAN, CLIP_STD)  # [B, 3, 32, 32]
    batch = clip_tokenizer()(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        temperature = model.logit_scale.exp().item()
        img = model.vision_model(pixel_values=pixels).pooler_output
        img = model.visual_projection(img)  # [B, 16]
        txt = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        txt = model.text_projection(txt)  # [B, 16]
    return F.cosine_similarity(img, txt, dim=-1), temperature


def test_pickscore_is_temperature_times_cosine_over_20(tiny_folder):
    reward = load_reward(RewardConfig(name="pickscore", checkpoint=str(tiny_folder)))
    images = torch.rand(2, 3, 48, 40)
    cos, temperature = _cosine_by_hand(tiny_folder, images, PROMPTS)
    assert temperature == pytest.approx(50.0, rel=1e-5)
    assert reward.scale == pytest.approx(temperature / 20)
    with torch.no_grad():
        torch.testing.assert_close(reward.score(images, PROMPTS), temperature * cos / 20)


def test_hf_clip_is_plain_cosine(tiny_folder):
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=str(tiny_folder)))
    images = torch.rand(2, 3, 32, 32)
    cos, _ = _cosine_by_hand(tiny_folder, images, PROMPTS)
    assert reward.scale == 1.0 and reward.image_size == 32
    with torch.no_grad():
        torch.testing.assert_close(reward.score(images, PROMPTS), cos)


def test_explicit_scale_wins(tiny_folder):
    reward = load_reward(RewardConfig(name="pickscore", checkpoint=str(tiny_folder), scale=1.0))
    assert reward.scale == 1.0


def test_processor_folder_gives_tokenizer_and_pixel_statistics(tiny_folder, tmp_path):
    processor = tmp_path / "processor"
    clip_tokenizer().save_pretrained(processor)
    stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (processor / "preprocessor_config.json").write_text(json.dumps(stats))
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=str(tiny_folder), processor_path=str(processor)))
    assert reward.mean == (0.5, 0.5, 0.5) and reward.std == (0.5, 0.5, 0.5)
    assert reward.tokenizer("a dog")["input_ids"] == clip_tokenizer()("a dog")["input_ids"]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_reward(RewardConfig(name="hf_clip", checkpoint=str(tmp_path / "does-not-exist")))


def test_hub_ids_go_to_from_pretrained_with_a_clear_error(monkeypatch):
    assert resolve_model_location("yuvalkirstain/PickScore_v1") == "yuvalkirstain/PickScore_v1"

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(CLIPModel, "from_pretrained", offline)
    with pytest.raises(OSError, match=r"(?s)hub id .*yuvalkirstain/PickScore_v1.*save_pretrained"):
        load_reward(RewardConfig(name="pickscore"))  # the default checkpoint is PickScore's hub id


def test_builtin_tiny_folder_carries_tokenizer(private_cache):
    reward = load_reward(RewardConfig(name="pickscore", checkpoint="builtin:tiny", seed=3))
    folder = private_cache / "builtin" / "pickscore-tiny-3"
    assert isinstance(reward, HFClipReward)
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()}
    assert reward.tokenizer("a dog")["input_ids"] == clip_tokenizer()("a dog")["input_ids"]


def test_processor_folder_without_tokenizer_is_refused(tiny_folder, tmp_path):
    empty = tmp_path / "empty-processor"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        load_reward(RewardConfig(name="hf_clip", checkpoint=str(tiny_folder), processor_path=str(empty)))
