"""What a training reward costs: forward + backward to the pixels per image at real size, on the CPU.

    python -m benchmarks.reward_cost                        # every reward, real sizes, random weights
    python -m benchmarks.reward_cost --rewards hpsv2.1 aesthetic_v2.5
    python -m benchmarks.reward_cost --quick                # builtin:tiny models, a check of the script

Each reward is built at its published architecture with random weights (no download) and scores
one 512 x 512 image the way the trainer does: preprocessing in the graph, the text side (when
there is one) computed once and cached, then ``score.sum().backward()`` to the pixels. One image,
one timed repeat after one warm-up (the machine may be shared: the time is a ballpark).
FLOPs (matrix products, convolutions, attention; torch's counter) of the image side's forward +
backward (the text side is cached across steps) are counted on the meta device for the CLIP/SigLIP
towers. HPSv3 (Qwen2-VL-7B, 8 B parameters) does not fit this machine in float32 and its forward
reads token ids on the host, so it is built truncated (see :func:`measure_hpsv3`), counted and
timed on the CPU, and extrapolated to 32 vision blocks and 28 decoder layers (``extrapolated``).
Its prompt is tokenised by the tiny builtin tokenizer (~710 text tokens, the real one ~520).
Writes ``docs/benchmarks/reward_cost.json`` with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import count_flops, emit, machine

PROMPT = "a photo of a red fox in the snow, detailed, natural lighting"
REWARDS = ("hpsv2.1", "pickscore", "hpsv3", "aesthetic_v2.5")


def clip_h_config():
    """PickScore's CLIP-H/14 (laion CLIP-ViT-H-14) as a transformers ``CLIPConfig``."""
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                num_attention_heads=16, max_position_embeddings=77)
    vision = dict(image_size=224, patch_size=14, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                  num_attention_heads=16)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=1024)


def siglip_so400m_config():
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                              image_size=384, patch_size=14)


def qwen2vl_7b_config(tokenizer, text_layers: int, vision_depth: int = 32):
    """Qwen2-VL-7B's widths with the tiny tokenizer's special ids, ``text_layers`` decoder layers and
    ``vision_depth`` vision blocks (the real model: 28 and 32)."""
    from srpo.rewards.hpsv3_reward import tiny_qwen2vl_config

    config = tiny_qwen2vl_config(tokenizer)
    text = config.text_config
    text.vocab_size, text.hidden_size, text.intermediate_size = 151658, 3584, 18944
    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads = text_layers, 28, 4
    text.layer_types = ["full_attention"] * text_layers
    text.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    vision = config.vision_config
    vision.depth, vision.embed_dim, vision.hidden_size, vision.num_heads, vision.mlp_ratio = vision_depth, 1280, 3584, 16, 4
    return config


def build(name: str, quick: bool, device: str, depths: tuple[int, int] = (32, 28)):
    """The reward ``name`` at real size (random weights) on ``device`` (``meta``: no storage)."""
    from srpo.rewards import RewardConfig, load_reward

    if quick:
        return load_reward(RewardConfig(name=name, checkpoint="builtin:tiny"))
    with torch.device(device):
        torch.manual_seed(0)
        if name == "hpsv2.1":
            import open_clip

            from srpo.rewards.open_clip_reward import OpenClipReward, create_open_clip_model

            model = create_open_clip_model("ViT-H-14") if device == "cpu" else \
                open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
            return OpenClipReward(model, open_clip.get_tokenizer("ViT-H-14"), architecture="ViT-H-14")
        if name == "pickscore":
            from transformers import CLIPModel

            from srpo.models.tokenizers import clip_tokenizer
            from srpo.rewards.hf_clip_reward import HFClipReward

            return HFClipReward(CLIPModel(clip_h_config()), clip_tokenizer(77), scale=5.0)
        if name == "aesthetic_v2.5":
            from transformers import SiglipVisionModel

            from srpo.rewards.aesthetic_reward import AestheticHead, AestheticPredictor, AestheticReward

            vision = SiglipVisionModel(siglip_so400m_config())
            return AestheticReward(AestheticPredictor(vision, AestheticHead(1152)), image_size=384)
        if name == "hpsv3":
            from srpo.rewards.hpsv3_reward import HPSv3Network, HPSv3Reward, tiny_qwen2vl_tokenizer

            tokenizer = tiny_qwen2vl_tokenizer()
            vision_depth, text_layers = depths
            return HPSv3Reward(HPSv3Network(qwen2vl_7b_config(tokenizer, text_layers, vision_depth)), tokenizer)
    raise ValueError(f"unknown reward {name!r}: choose from {', '.join(REWARDS)}")


def forward_backward(reward, images: torch.Tensor) -> None:
    """One training-style reward pass: score (text side cached) and backward to the pixels."""
    if getattr(reward, "is_image_only", False):
        reward.score_images(images).sum().backward()
    else:
        reward.score(images, [PROMPT] * len(images)).sum().backward()


def image_side_backward(reward, images: torch.Tensor) -> None:
    """The per-image part of a pass: the image side and its backward (a feature reward's text side is
    cached across steps, and transformers' text masks cannot run on the meta device)."""
    if getattr(reward, "is_image_only", False):
        reward.score_images(images).sum().backward()
    else:
        reward.image_features(images).sum().backward()


def timed_pass(reward, size: int, warmup: bool = True) -> tuple[float, int]:
    """Seconds of one forward + backward of a ``size`` image (after a warm-up) and its FLOPs."""
    images = torch.rand(1, 3, size, size, requires_grad=True)
    if warmup:
        forward_backward(reward, images)  # and the text features' cache
    start = time.perf_counter()
    forward_backward(reward, images)
    seconds = time.perf_counter() - start
    return seconds, count_flops(lambda: forward_backward(reward, images))


def measure(name: str, args) -> dict:
    if name == "hpsv3" and not args.quick:
        return measure_hpsv3(args)
    reward = build(name, args.quick, "cpu")
    params = sum(p.numel() for p in reward.parameters())
    if args.quick:
        seconds, flops = timed_pass(reward, args.size)
        entry = {"flops_per_image": flops, "flops_counted_on": "cpu"}
    else:
        images = torch.rand(1, 3, args.size, args.size, requires_grad=True)
        forward_backward(reward, images)  # warm-up (and the text features' cache)
        start = time.perf_counter()
        forward_backward(reward, images)
        seconds = time.perf_counter() - start
        del reward
        meta = build(name, False, "meta")
        meta_images = torch.rand(1, 3, args.size, args.size, device="meta", requires_grad=True)
        entry = {"flops_per_image": count_flops(lambda: image_side_backward(meta, meta_images)),
                 "flops_counted_on": "meta"}
    entry.update({"parameters": params, "seconds_per_image": seconds, "image_size_in": args.size})
    print(name, entry, flush=True)
    return entry


def measure_hpsv3(args) -> dict:
    """HPSv3 from three truncated builds (vision blocks, decoder layers) = (2, 1), (1, 1), (1, 0): FLOPs per
    vision block and per decoder layer by difference, extrapolated to (32, 28); the time scaled from the
    (2, 1) build by the FLOP ratio (its measured throughput)."""
    runs = {}
    for depths in ((2, 1), (1, 1), (1, 0)):
        reward = build("hpsv3", False, "cpu", depths)
        seconds, flops = timed_pass(reward, args.size, warmup=False)  # no text cache to warm
        runs[depths] = {"seconds": seconds, "flops": flops, "parameters": sum(p.numel() for p in reward.parameters())}
        print("hpsv3", depths, runs[depths], flush=True)
        del reward
    (a, b, c) = (runs[(2, 1)], runs[(1, 1)], runs[(1, 0)])
    per_block, per_layer = a["flops"] - b["flops"], b["flops"] - c["flops"]
    full_flops = b["flops"] + 31 * per_block + 27 * per_layer
    per_block_p, per_layer_p = a["parameters"] - b["parameters"], b["parameters"] - c["parameters"]
    entry = {"flops_per_image": full_flops, "flops_counted_on": "cpu (truncated builds, extrapolated)",
             "parameters": b["parameters"] + 31 * per_block_p + 27 * per_layer_p,
             "seconds_per_image": a["seconds"] * full_flops / a["flops"], "image_size_in": args.size,
             "extrapolated": True, "flops_per_vision_block": per_block, "flops_per_decoder_layer": per_layer,
             "builds": {f"vision_{v}_text_{t}": r for (v, t), r in runs.items()}}
    print("hpsv3", entry, flush=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS)
    parser.add_argument("--quick", action="store_true", help="builtin:tiny models")
    parser.add_argument("--size", type=int, default=512, help="side of the generated image scored")
    parser.add_argument("--merge", action="store_true", help="keep the other rewards already in --json")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results: dict = {}
    if args.merge and args.json and Path(args.json).is_file():
        results = json.loads(Path(args.json).read_text())["rewards"]
    for name in args.rewards:  # written after each reward, so a time limit keeps what was measured
        results[name] = measure(name, args)
        emit({"benchmark": "reward_cost", "quick": args.quick, "rewards": results, "machine": machine(),
              "note": "one image, one timed repeat after a warm-up, random weights; see the module docstring"},
             args.json)


if __name__ == "__main__":
    main()
