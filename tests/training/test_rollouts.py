"""Offline rollouts: real images from a metadata.jsonl folder, encoded a batch at a time."""

import json

import pytest
import torch
from PIL import Image

from srpo.config import RolloutConfig
from srpo.models.families import load_policy
from srpo.training.rollouts import encode_image_folder, load_image


def image_folder(root, sizes):
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    lines = []
    for i, (w, h) in enumerate(sizes):
        pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"photo {i}\u2028line"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # with a byte-order mark
    return root


def test_offline_images_are_encoded_in_batches_up_to_num_prompts(tmp_path, policy_cfg):
    folder = image_folder(tmp_path / "imgs", [(32, 32), (48, 32), (32, 40), (40, 40), (32, 32)])
    policy = load_policy(policy_cfg)
    cfg = RolloutConfig(mode="offline", images=str(folder), num_prompts=3)
    calls = []
    encode = policy.encode_images
    policy.encode_images = lambda pixels: calls.append(len(pixels)) or encode(pixels)
    rollouts = encode_image_folder(policy, cfg, policy_cfg, batch_size=2)
    assert rollouts.prompts == ["photo 0\u2028line", "photo 1\u2028line", "photo 2\u2028line"]
    assert calls == [2, 1]  # never the whole folder at once
    one_by_one = torch.cat([encode(load_image(folder / f"{i}.png", 32, 32)[None]) for i in range(3)])
    torch.testing.assert_close(rollouts.x0, one_by_one)
    assert rollouts.mode == "offline" and rollouts.eps.shape == rollouts.x0.shape


def test_a_malformed_metadata_line_names_the_file_and_line(tmp_path, policy_cfg):
    folder = image_folder(tmp_path / "imgs", [(32, 32)])
    (folder / "metadata.jsonl").write_text('{"file_name": "0.png", "text": "ok"}\n{"file": "x"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: expected a JSON object with file_name and text"):
        encode_image_folder(load_policy(policy_cfg), RolloutConfig(mode="offline", images=str(folder)), policy_cfg)
