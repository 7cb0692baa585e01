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
towers. HPSv3 (Qwen2-VL-7B, 8 B parameters) does
not fit this machine in float32 and its forward reads token ids on the host, so it is built with
``--hpsv3-text-layers`` of its 28 decoder layers (all 32 vision blocks) and timed and counted on
the CPU; its full-size figures are extrapolated linearly in the decoder layers (``extrapolated``).
Its prompt is tokenised by the tiny builtin tokenizer (~710 text tokens, the real one ~520).
Writes ``docs/benchmarks/reward_cost.json`` with ``--json``.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import count_flops, emit, machine

PROMPT = "a photo of a red fox in the snow, detailed, natural lighting"
REWARDS = ("hpsv2.1", "pickscore", "hpsv3", "aesthetic_v2.5")
HPSV3_TEXT_LAYERS = 28


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


def qwen2vl_7b_config(tokenizer, text_layers: int):
    """Qwen2-VL-7B's widths with the tiny tokenizer's special ids and ``text_layers`` decoder layers."""
    from srpo.rewards.hpsv3_reward import tiny_qwen2vl_config

    config = tiny_qwen2vl_config(tokenizer)
    text = config.text_config
    text.vocab_size, text.hidden_size, text.intermediate_size = 151658, 3584, 18944
    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads = text_layers, 28, 4
    text.layer_types = ["full_attention"] * text_layers
    text.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    vision = config.vision_config
    vision.depth, vision.embed_dim, vision.hidden_size, vision.num_heads, vision.mlp_ratio = 32, 1280, 3584, 16, 4
    return config


def build(name: str, quick: bool, device: str, text_layers: int):
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
            return HPSv3Reward(HPSv3Network(qwen2vl_7b_config(tokenizer, text_layers)), tokenizer)
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


def measure(name: str, args) -> dict:
    text_layers = HPSV3_TEXT_LAYERS if args.quick else args.hpsv3_text_layers
    reward = build(name, args.quick, "cpu", text_layers)
    params = sum(p.numel() for p in reward.parameters())
    images = torch.rand(1, 3, args.size, args.size, requires_grad=True)
    forward_backward(reward, images)  # warm-up (and the text features' cache)
    start = time.perf_counter()
    forward_backward(reward, images)
    seconds = time.perf_counter() - start
    entry = {"parameters": params, "seconds_per_image": seconds, "image_size_in": args.size}
    if name == "hpsv3" or args.quick:
        entry["flops_per_image"] = count_flops(lambda: forward_backward(reward, images))
        entry["flops_counted_on"] = "cpu"
    del reward
    if name == "hpsv3" and not args.quick:
        entry["text_layers_built"] = text_layers
        entry["extrapolated"] = extrapolate(name, args, entry, text_layers)
    elif not args.quick:
        meta = build(name, False, "meta", text_layers)
        meta_images = torch.rand(1, 3, args.size, args.size, device="meta", requires_grad=True)
        entry["flops_per_image"] = count_flops(lambda: image_side_backward(meta, meta_images))
        entry["flops_counted_on"] = "meta"
    print(name, {k: v for k, v in entry.items()}, flush=True)
    return entry


def extrapolate(name: str, args, full: dict, layers: int) -> dict:
    """HPSv3 at 28 decoder layers, from ``layers`` and ``layers - 1`` (per-layer cost by difference)."""
    fewer = build(name, False, "cpu", layers - 1)
    images = torch.rand(1, 3, args.size, args.size, requires_grad=True)
    forward_backward(fewer, images)
    start = time.perf_counter()
    forward_backward(fewer, images)
    seconds = time.perf_counter() - start
    flops = count_flops(lambda: forward_backward(fewer, images))
    per_layer_s, per_layer_f = full["seconds_per_image"] - seconds, full["flops_per_image"] - flops
    extra = HPSV3_TEXT_LAYERS - layers
    return {"text_layers": HPSV3_TEXT_LAYERS, "seconds_per_image": full["seconds_per_image"] + extra * per_layer_s,
            "flops_per_image": full["flops_per_image"] + extra * per_layer_f,
            "per_decoder_layer_seconds": per_layer_s, "per_decoder_layer_flops": per_layer_f}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS)
    parser.add_argument("--quick", action="store_true", help="builtin:tiny models")
    parser.add_argument("--size", type=int, default=512, help="side of the generated image scored")
    parser.add_argument("--hpsv3-text-layers", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results: dict = {}
    for name in args.rewards:  # written after each reward, so a time limit keeps what was measured
        results[name] = measure(name, args)
        emit({"benchmark": "reward_cost", "quick": args.quick, "rewards": results, "machine": machine(),
              "note": "one image, one timed repeat after a warm-up, random weights; see the module docstring"},
             args.json)


if __name__ == "__main__":
    main()
