"""Cost of one training update on the CPU: Direct-Align / SRPO vs DRaFT-LV vs full-chain backprop.

    python -m benchmarks.step_cost            # mid-size FLUX (~36M transformer params), 128 px
    python -m benchmarks.step_cost --quick    # tiny FLUX, for a smoke run

Every method trains the same FLUX config with the same tiny CLIP reward on the same clean
samples, in offline mode (x0 given, fresh noise), so that the update itself is measured: one
Direct-Align step (``direct_align``), the same plus the inversion branch (``srpo``; ``srpo_fused``:
both branches as one batch, ``train.fuse_branches``), DRaFT-LV
(one-step prediction from the last sampler level, 2 noise draws) and DRaFT-K through the whole
sampler (``full_chain``, 10 steps) and GRPO (``grpo``: 4 SDE samples per prompt over the 10 sampler
steps without grad, then the clipped objective on 3 random steps with grad; its update includes
its sampling, which replaces the rollout), ``mixgrpo`` (the same with the SDE and the training in a
window of 3 steps, ODE elsewhere), ``nft`` and ``awm`` (4 ODE samples per prompt without grad, then
3 noise levels of their flow-matching losses with grad), ``drtune`` (the 10-step chain with
stop-gradient inputs, 3 steps with grad); ``srpo_lora`` / ``srpo_lora_int8`` / ``srpo_lora_nf4``: the SRPO
update of a LoRA r16 adapter over the fp32, int8 and NF4 base (``policy.base_quantization``). Each method runs in its own process so that its peak
resident memory (``peak_rss_mb``, model load included) is its own.

FLOPs per update are counted by torch's FLOP counter (matmuls, convolutions and attention; the
transformer, the VAE decoder and the reward tower, forward and backward). torch has no formula
for the CPU attention kernel (``_scaled_dot_product_flash_attention_for_cpu`` and its backward);
``benchmarks.common.count_flops`` adds torch's own SDPA formulas for it (counts before that fix
left attention out). Elementwise work, norms and resampling are not counted. ``achieved_share`` is
the SRPO update's FLOP/s over this machine's measured fp32 matmul peak (``peak_gflops``: the best
rate of 1024/2048/4096-sized products, measured before and after the methods, the higher kept,
so that a peak measured during a burst of load cannot flatter the share). The seconds are the
median of ``--repeats`` updates; on shared cores they move with the load (``machine.loadavg``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import count_flops, cpu_matmul_peak_gflops, emit, machine, median, time_it

MID = dict(num_layers=2, num_single_layers=4, num_heads=8, head_dim=64, axes_dims_rope=(16, 24, 24),
           text_dim=256, pooled_dim=256, latent_channels=16, vae_channels=32, t5_max_length=32)
QUICK = dict()
METHODS = {
    "direct_align": dict(method="direct_align", inversion=False, num_injections=1),
    "srpo": dict(method="srpo", inversion=True, num_injections=1),
    "srpo_fused": dict(method="srpo", inversion=True, num_injections=1, fuse_branches=True),
    "draft_lv": dict(method="draft_lv", inversion=False, num_injections=2),
    "full_chain": dict(method="draft", inversion=False, draft_steps=10),
    "grpo": dict(method="grpo", inversion=False, grpo=dict(group_size=4, steps="random", num_train_steps=3)),
    # issue 26: the same 3 trained steps (levels) as grpo's, 4 images per prompt for the group methods
    "drtune": dict(method="drtune", inversion=False, drtune=dict(num_train_steps=3)),
    "mixgrpo": dict(method="mixgrpo", inversion=False, grpo=dict(group_size=4), mixgrpo=dict(window_size=3)),
    "nft": dict(method="nft", inversion=False, nft=dict(group_size=4, train_fraction=0.35)),
    "awm": dict(method="awm", inversion=False, awm=dict(group_size=4, num_train_steps=3)),
    # LoRA r16 over the fp32 base and over an int8 / nf4 base (policy.base_quantization, torchao)
    "srpo_lora": dict(method="srpo", inversion=True, num_injections=1, finetune="lora"),
    "srpo_lora_int8": dict(method="srpo", inversion=True, num_injections=1, finetune="lora", base_quantization="int8"),
    "srpo_lora_nf4": dict(method="srpo", inversion=True, num_injections=1, finetune="lora", base_quantization="nf4"),
}


def measure(method: str, quick: bool, size: int, batch: int, repeats: int) -> dict:
    from srpo.artifacts import RolloutSet
    from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
    from srpo.models.families import load_policy
    from srpo.models.tiny import TinyFluxSpec, save_tiny_flux
    from srpo.rewards import RewardConfig, load_reward
    from srpo.training.trainer import SRPOTrainer

    folder = save_tiny_flux(Path(tempfile.mkdtemp()) / "flux", TinyFluxSpec(**(QUICK if quick else MID)), seed=0)
    overrides = dict(METHODS[method])
    policy_cfg = PolicyConfig(pretrained=str(folder), height=size, width=size, device="cpu",
                              base_quantization=overrides.pop("base_quantization", "none"))
    policy = load_policy(policy_cfg)
    shape = policy.latent_shape(size, size)
    g = torch.Generator().manual_seed(0)
    prompts = [f"a photo of object {i}" for i in range(batch)]
    data = RolloutSet(prompts, torch.randn(batch, *shape, generator=g), torch.randn(batch, *shape, generator=g),
                      "offline", size, size)
    rollout_cfg = RolloutConfig(num_steps=10)
    cfg = TrainConfig(steps=10_000, batch_size=batch, learning_rate=1e-6, **overrides)
    trainer = SRPOTrainer(policy, load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny")), data, cfg,
                          rollout_cfg)
    step = iter(range(10_000))
    flops = count_flops(lambda: trainer.train_step(next(step)))
    times = time_it(lambda: trainer.train_step(next(step)), repeats, warmup=1)
    cond = policy.encode_prompts(prompts)
    rollout_s = min(time_it(lambda: policy.rollout(cond, data.eps, 1), 3, warmup=1))  # one no-grad sampler step
    seconds = median(times)
    return {"name": method, "seconds_per_update": seconds, "gflops_per_update": flops / 1e9,
            "achieved_gflops": flops / seconds / 1e9, "rollout_seconds_per_sampler_step": rollout_s,
            "transformer_params": sum(p.numel() for p in policy.transformer.parameters()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, for a smoke run")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {', '.join(METHODS)} (srpo is always measured)")
    parser.add_argument("--method", choices=sorted(METHODS), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    methods = [m for m in METHODS if m in methods or m == "srpo"]
    if args.method:
        print(json.dumps(measure(args.method, args.quick, args.size, args.batch, args.repeats)))
        return
    peak_sizes = (256, 512) if args.quick else (1024, 2048, 4096)
    peak_before = cpu_matmul_peak_gflops(peak_sizes)
    print(f"fp32 matmul peak: {peak_before:.1f} GFLOP/s", flush=True)
    results = []
    for method in methods:
        cmd = [sys.executable, "-m", "benchmarks.step_cost", "--method", method, "--size", str(args.size),
               "--batch", str(args.batch), "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        child = subprocess.run(cmd, capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"measuring {method} failed (exit {child.returncode}):\n{child.stderr[-4000:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{method:>13}: {r['seconds_per_update']:.3f} s/update  {r['gflops_per_update']:.2f} GFLOP  "
              f"{r['achieved_gflops']:.1f} GFLOP/s  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    peak_after = cpu_matmul_peak_gflops(peak_sizes)  # measured again: a load that came and went shows here
    peak = max(peak_before, peak_after)
    print(f"fp32 matmul peak after the methods: {peak_after:.1f} GFLOP/s; using {peak:.1f}", flush=True)
    srpo = next(r for r in results if r["name"] == "srpo")
    for r in results:  # every method's share of the same peak
        r["achieved_share"] = r["achieved_gflops"] / peak
    emit({"benchmark": "step_cost", "quick": args.quick, "size": args.size, "batch": args.batch,
          "methods": results, "peak_gflops": peak,
          "peak_gflops_before_after": [peak_before, peak_after], "achieved_share": srpo["achieved_gflops"] / peak,
          "machine": machine()})


if __name__ == "__main__":
    main()
