"""Scoring throughput of every evaluation metric: images per second, after a warm-up batch.

    python benchmarks/metric_throughput.py                      # tiny random models (builtin:tiny), CPU
    python benchmarks/metric_throughput.py --arch real --device cuda   # real architectures, random weights

``--arch tiny`` loads each metric through its real loader from ``builtin:tiny``; ``--arch real``
builds the published architectures (HPS ViT-H-14, PickScore CLIP-H, CLIP ViT-L/14, SigLIP
so400m + v2.5 head, BLIP ViT-L + BERT-base) with random weights, so no weights are needed.
Every batch has new prompts, so text features are never served from the cache. The last line
printed is one JSON object with the numbers and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ("hpsv2.1", "sgp_hps", "pickscore", "clip_score", "aesthetic_v2.5", "imagereward")


def real_metric(name: str):
    """The published architecture of ``name`` with random weights (no download)."""
    from srpo.evaluation.metrics.aesthetic import AestheticHead, AestheticMetric, AestheticPredictor
    from srpo.evaluation.metrics.clip_metrics import CosineMetric, SGPHPSMetric
    from srpo.evaluation.metrics.imagereward import ImageRewardMetric, ImageRewardModel, tiny_bert_tokenizer
    from srpo.models.tokenizers import clip_tokenizer
    from srpo.rewards.hf_clip_reward import HFClipReward

    if name in ("hpsv2.1", "sgp_hps"):
        import open_clip

        from srpo.rewards.open_clip_reward import OpenClipReward, create_open_clip_model

        reward = OpenClipReward(create_open_clip_model("ViT-H-14"), open_clip.get_tokenizer("ViT-H-14"),
                                architecture="ViT-H-14")
        return CosineMetric(name, reward) if name == "hpsv2.1" else SGPHPSMetric(reward)
    if name in ("pickscore", "clip_score"):
        from transformers import CLIPConfig, CLIPModel

        if name == "pickscore":  # laion CLIP-ViT-H-14
            text = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24)
            vision = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                          image_size=224, patch_size=14)
            proj = 1024
        else:  # openai/clip-vit-large-patch14
            text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
            vision = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                          image_size=224, patch_size=14)
            proj = 768
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj))
        reward = HFClipReward(model, clip_tokenizer(77))
        return CosineMetric(name, reward, scale=100.0, floor=0.0 if name == "clip_score" else None)
    if name == "aesthetic_v2.5":
        from transformers import SiglipVisionConfig, SiglipVisionModel

        vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                                      num_attention_heads=16, image_size=384, patch_size=14))
        return AestheticMetric(AestheticPredictor(vision, AestheticHead(1152)), image_size=384)
    if name == "imagereward":
        from transformers import BlipTextConfig, BlipVisionConfig

        vision = BlipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=224, patch_size=16, layer_norm_eps=1e-6)
        text = BlipTextConfig(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
                              num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
                              is_decoder=True, layer_norm_eps=1e-12)
        return ImageRewardMetric(ImageRewardModel(vision, text).eval().requires_grad_(False), tiny_bert_tokenizer())
    raise ValueError(name)


def load(name: str, arch: str):
    from srpo.evaluation.config import MetricConfig
    from srpo.evaluation.metrics import load_metric

    if arch == "tiny":
        return load_metric(MetricConfig(name=name, checkpoint="builtin:tiny"))
    return real_metric(name)


def measure(metric, batch: int, batches: int, repeats: int, size: int, device: str, dtype: torch.dtype) -> dict:
    """Median (and range) over ``repeats`` of images/s scoring ``batches`` batches of ``batch`` images."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g).to(device)
    words = "red green blue cat dog city night photo painting anime tree river".split()

    def prompts(k: int) -> list[str]:
        return [f"a {words[(k + i) % len(words)]} {words[(3 * k + i) % len(words)]} number {k}-{i}" for i in range(batch)]

    rates = []
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
        metric.score(images, prompts(-1))  # warm-up
        for r in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for k in range(batches):
                metric.score(images, prompts(1000 * r + k))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rates.append(batch * batches / (time.perf_counter() - start))
    return {"images_per_s": round(statistics.median(rates), 2), "min": round(min(rates), 2), "max": round(max(rates), 2),
            "batch": batch, "batches": batches, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="side of the square input images (pixels)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--metrics", nargs="*", default=list(METRICS))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SRPO_CACHE", tempfile.mkdtemp(prefix="srpo-bench-"))
    results = {}
    for name in args.metrics:
        t0 = time.perf_counter()
        metric = load(name, args.arch).to(args.device)
        load_s = time.perf_counter() - t0
        results[name] = {**measure(metric, args.batch, args.batches, args.repeats, args.size, args.device,
                                   getattr(torch, args.dtype)),
                         "load_s": round(load_s, 2)}
        r = results[name]
        print(f"{name:16s} {r['images_per_s']:10.1f} images/s (median; {r['min']:.1f}-{r['max']:.1f})  "
              f"load {load_s:.1f} s", flush=True)
        del metric
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(json.dumps({"benchmark": "metric_throughput", "arch": args.arch, "device": args.device,
                      "device_name": device_name, "threads": torch.get_num_threads(), "image_size": args.size,
                      "dtype": args.dtype, "metrics": results}))


if __name__ == "__main__":
    main()
