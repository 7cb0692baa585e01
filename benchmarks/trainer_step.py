"""The trainer's own update on a FLUX.1-size policy (random weights, LoRA), timed like gpu_step.

    python -m benchmarks.trainer_step             # on a GPU: FLUX.1 size, 720 px, LoRA r16, ViT-H/14 reward
    python -m benchmarks.trainer_step --compile   # the same with policy.compile
    python -m benchmarks.trainer_step --compile --fuse-branches   # and train.fuse_branches
    python -m benchmarks.trainer_step --tiny      # anywhere (CPU too): a tiny FLUX and CLIP, to check the script

``benchmarks.gpu_step`` times a hand-written update on bf16 weights. This one times
``SRPOTrainer.train_step`` itself, with the GPU configs' precision: fp32 master weights of the
adapter, bf16 autocast, untrained weights stored in bf16 (``policy.frozen_dtype``). The
pipeline is FLUX.1's architecture (19 double + 38 single blocks, width 3072, FLUX.1's VAE) with
tiny text encoders (prompt embeddings are computed once and cached, so their size does not
change the update) and an open_clip ViT-H/14 as the reward. Samples are offline (stored x0,
fresh noise), so the update alone is timed; the rollout is timed as one no-grad sampler step of
``policy.rollout`` on the same batch. MFU counts FLOPs as gpu_step does (the issue's formula,
from the model's config, so ``--tiny`` and ``--blocks`` report it too, on a CPU against its
measured fp32 matmul peak; an SRPO update of one noise level = 2 micro-steps = 6
forward-equivalents; the recomputation of gradient checkpointing is not counted, and with LoRA
about 2.1 of the 3 forward-equivalents per micro-step are computed: see gpu_step).
``--json-out PATH`` also writes the JSON result to PATH (after the timed updates with
``"partial": true``, then the whole), so a run stopped by a time limit keeps its update timing.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit, machine, median, time_it, write_json
from benchmarks.gpu_step import card_peak, flux_forward_flops

FLUX_SPEC = dict(num_layers=19, num_single_layers=38, num_heads=24, head_dim=128, axes_dims_rope=(16, 56, 56),
                 text_dim=4096, pooled_dim=768, latent_channels=16, vae_block_channels=(128, 256, 512, 512),
                 vae_norm_groups=32, vae_layers_per_block=2, vae_mid_attention=True, t5_max_length=512)


def build_policy(tiny: bool, device: torch.device, cfg, overrides: dict):
    """A FluxPolicy of FLUX.1's architecture (or a tiny one), built on ``device`` and prepared by ``cfg``."""
    from srpo.models.families import prepare_policy
    from srpo.models.flux import FluxPolicy
    from srpo.models.tiny import TinyFluxSpec, build_tiny_flux_pipeline

    spec = TinyFluxSpec() if tiny else TinyFluxSpec(**{**FLUX_SPEC, **overrides})
    with torch.device(device):  # initialise the weights where they will live
        pipe = build_tiny_flux_pipeline(spec, seed=0)
    autocast = torch.bfloat16 if cfg.autocast == "bfloat16" else None
    return prepare_policy(FluxPolicy(pipe, device, autocast_dtype=autocast), cfg)


def build_reward(tiny: bool, device: torch.device):
    from srpo.rewards import RewardConfig, load_reward

    if tiny:
        return load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"), device=device)
    import open_clip

    from srpo.rewards.open_clip_reward import OpenClipReward, create_open_clip_model

    model = create_open_clip_model("ViT-H-14")  # random weights: HPS v2.1's architecture
    return OpenClipReward(model, open_clip.get_tokenizer("ViT-H-14"), architecture="ViT-H-14").to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny FLUX and CLIP: a check of the script")
    parser.add_argument("--size", type=int, default=None, help="image side (default 720, tiny 64)")
    parser.add_argument("--batch", type=int, default=1, help="samples per update")
    parser.add_argument("--updates", type=int, default=5, help="timed updates (after 2 warm-up updates)")
    parser.add_argument("--compile", action="store_true", help="policy.compile: compile the repeated blocks")
    parser.add_argument("--checkpointing", action="store_true", help="policy.gradient_checkpointing")
    parser.add_argument("--vae-checkpointing", action="store_true", help="train.vae_gradient_checkpointing")
    parser.add_argument("--fuse-branches", action="store_true", help="train.fuse_branches: both branches as one batch")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast on the CPU too (on by default on GPUs)")
    parser.add_argument("--blocks", default=None, help="D,S: override FLUX.1's block counts (a dry run of the full "
                        "width, e.g. on a CPU)")
    parser.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    args = parser.parse_args()
    overrides = {}
    if args.blocks:
        overrides["num_layers"], overrides["num_single_layers"] = map(int, args.blocks.split(","))
    start = time.perf_counter()

    from srpo.artifacts import RolloutSet
    from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
    from srpo.training.trainer import SRPOTrainer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = device.type == "cuda"
    size = args.size or (64 if args.tiny else 720)
    policy_cfg = PolicyConfig(height=size, width=size, device=str(device), dtype="float32",
                              autocast="bfloat16" if sync or args.autocast else "none",
                              gradient_checkpointing=args.checkpointing, compile=args.compile)
    policy = build_policy(args.tiny, device, policy_cfg, overrides)
    reward = build_reward(args.tiny, device)
    build_s = time.perf_counter() - start

    prompts = [f"a photo of object {i}" for i in range(args.batch)]
    g = torch.Generator().manual_seed(0)
    shape = policy.latent_shape(size, size)
    data = RolloutSet(prompts, torch.randn(args.batch, *shape, generator=g), torch.randn(args.batch, *shape, generator=g),
                      "offline", size, size)
    train_cfg = TrainConfig(steps=10_000, batch_size=args.batch, learning_rate=1e-6, finetune="lora", lora_rank=16,
                            lora_alpha=16.0, num_injections=1, vae_gradient_checkpointing=args.vae_checkpointing,
                            fuse_branches=args.fuse_branches)
    trainer = SRPOTrainer(policy, reward, data, train_cfg, RolloutConfig(num_steps=25))
    if sync:
        torch.cuda.reset_peak_memory_stats()
    step = iter(range(10_000))
    update_s = time_it(lambda: trainer.train_step(next(step)), args.updates, warmup=2, sync=sync)
    cond = policy.encode_prompts(prompts)
    tokens = (shape[1] // 2) * (shape[2] // 2) + cond.tokens.shape[1]
    fwd = args.batch * flux_forward_flops(tokens, policy.transformer.config)  # the formula, any size
    peak, peak_source = card_peak(device.type, args.tiny)
    header = {"benchmark": "trainer_step", "tiny": args.tiny, "overrides": overrides, "device": device.type,
              "size": size, "batch": args.batch, "tokens": tokens, "compile": args.compile,
              "fuse_branches": args.fuse_branches, "checkpointing": args.checkpointing,
              "vae_checkpointing": args.vae_checkpointing, "peak_flops": peak, "peak_source": peak_source,
              "forward_flops": fwd, "build_seconds": build_s}
    entry = {"train_seconds_per_update": median(update_s)}
    entry["train_mfu"] = 6 * fwd / entry["train_seconds_per_update"] / peak
    if sync:
        entry["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if args.json_out:  # the update timing survives a time limit hit while timing the rollout
        write_json({**header, **entry, "skipped_updates": trainer.skipped, "partial": True,
                    "total_seconds": time.perf_counter() - start, "machine": machine()}, args.json_out)
    eps = data.eps.to(device)
    rollout_s = time_it(lambda: policy.rollout(cond, eps, 1), max(3, args.updates), warmup=2, sync=sync)
    entry["rollout_seconds_per_step"] = median(rollout_s)
    entry["rollout_mfu"] = fwd / entry["rollout_seconds_per_step"] / peak
    skipped = trainer.skipped
    print(entry, f"skipped {skipped}", flush=True)
    emit({**header, "skipped_updates": skipped,
          "transformer_params": sum(p.numel() for p in policy.transformer.parameters()),
          "lora_params": sum(p.numel() for p in trainer.params),
          "base_dtype": str(next(p for n, p in policy.transformer.named_parameters() if "lora_" not in n).dtype),
          "frozen_dtype": str(policy.frozen_dtype), **entry,
          "total_seconds": time.perf_counter() - start, "machine": machine()}, args.json_out)


if __name__ == "__main__":
    main()
