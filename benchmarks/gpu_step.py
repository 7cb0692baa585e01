"""FLUX-sized rollout and training cost on one GPU (random weights, LoRA, 720 x 720).

    python -m benchmarks.gpu_step            # on a GPU: FLUX.1 size (19 double + 38 single blocks, width 3072)
    python -m benchmarks.gpu_step --tiny     # anywhere (CPU too): a tiny FLUX, to check the script

Measures, with bf16 weights and autocast, flash/SDPA attention as PyTorch picks it:
- rollout seconds per sampler step (one no-grad transformer forward, batch ``--rollout-batch``,
  default 1);
- training seconds per SRPO update (denoise + inversion micro-steps, each: transformer forward
  with LoRA, Direct-Align recovery, VAE decode, a ViT-H/14 reward tower, backward), and the same
  update with the branches fused into one micro-step of batch 2 (``train.fuse_branches``; keys
  ending in ``_fused``) and with the VAE's convolutions channels-last (NHWC: cuDNN's tensor-core
  layout; keys ending in ``_vae_channels_last``);
- peak GPU memory of each update;
- with ``--profile``, where one update's and one rollout step's time went (``busy_share``: kernel
  time over wall time; ``launches``; the ops that took longest);
- model-FLOPs utilisation, counting FLOPs as the issue defines them: forward
  ``2 * 6.46e9 * N + 57 * 4 * 3072 * N**2`` with N image + text tokens, backward twice the
  forward (so an update of two micro-steps counts 6 forward-equivalents), over the card's dense
  bf16 peak. VAE and reward FLOPs are not counted (about 2.5% of the FLOPs, but a quarter of the
  eager update time at 720 px), so MFU is a lower bound. ``--transformer-only`` leaves them out.
Then the same with ``torch.compile`` on the repeated transformer blocks, if time allows.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit, machine, matmul_peak_gflops, profile_once, time_it

FLUX_SIZE = dict(num_layers=19, num_single_layers=38, num_attention_heads=24, attention_head_dim=128,
                 axes_dims_rope=(16, 56, 56), joint_attention_dim=4096, pooled_projection_dim=768,
                 in_channels=64, guidance_embeds=True)
TINY = dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=16,
            axes_dims_rope=(4, 6, 6), joint_attention_dim=32, pooled_projection_dim=32, in_channels=64,
            guidance_embeds=True)
#: Dense bf16 peaks (FLOP/s) of common cards, by a substring of the device name.
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "H20": 148e12}


def flux_forward_flops(tokens: int) -> float:
    """The issue's estimate of one FLUX.1 forward over ``tokens`` image + text tokens."""
    return 2 * 6.46e9 * tokens + 57 * 4 * 3072 * tokens**2


def card_peak(device: str) -> tuple[float, str]:
    if device == "cpu":
        return matmul_peak_gflops() * 1e9, "measured fp32 matmul peak"
    name = torch.cuda.get_device_name()
    for key, peak in BF16_PEAK.items():
        if key in name:
            return peak, f"{name} dense bf16 spec"
    return matmul_peak_gflops(8192, device="cuda", dtype=torch.bfloat16) * 1e9, f"{name} measured bf16 matmul"


def build(tiny: bool, device: str, dtype, overrides: dict):
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from srpo.training.lora import FLUX_LORA_TARGETS, add_lora

    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise 12B parameters directly in bf16 on the GPU
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**{**(TINY if tiny else FLUX_SIZE), **overrides})
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.device(device):
        if tiny:
            vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, norm_num_groups=4,
                                layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False).to(dtype)
        else:  # FLUX.1's VAE architecture
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=2,
                                use_quant_conv=False, use_post_quant_conv=False).to(dtype)
    vae.requires_grad_(False)
    params = add_lora(transformer, rank=16, alpha=16, targets=FLUX_LORA_TARGETS)
    reward = build_reward(tiny, device, dtype)
    return transformer, vae, reward, params


def build_reward(tiny: bool, device: str, dtype):
    import open_clip

    from srpo.rewards.open_clip_reward import use_sequence_first_attention

    model = use_sequence_first_attention(open_clip.create_model("ViT-B-32" if tiny else "ViT-H-14", pretrained=None))
    visual = model.visual.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return visual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--size", type=int, default=None, help="image side (default 720, tiny 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--budget-s", type=float, default=420, help="skip the compiled pass past this time")
    parser.add_argument("--blocks", default=None, help="D,S: override the block counts (a dry run of the full path)")
    parser.add_argument("--heads", type=int, default=None, help="override the attention heads (dry run)")
    parser.add_argument("--transformer-only", action="store_true",
                        help="train on a latent loss: no VAE decode and reward tower in the update")
    parser.add_argument("--cudnn-sdp", action="store_true", help="allow cuDNN attention (off by default)")
    parser.add_argument("--compile-mode", choices=["default", "max-autotune-no-cudagraphs"], default="default",
                        help="torch.compile mode of the compiled pass")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one update and one rollout step per pass (kernel time vs wall time)")
    parser.add_argument("--rollout-batch", type=int, default=1,
                        help="prompts per rollout forward (larger products; MFU counts every sample)")
    args = parser.parse_args()
    if args.rollout_batch < 1:  # before minutes of building a 12B model
        parser.error("--rollout-batch must be at least 1")
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = args.size or (64 if args.tiny else 720)
    text_tokens = 32 if args.tiny else 512
    sync = device == "cuda"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(args.cudnn_sdp)  # flash / memory-efficient kernels otherwise

    from srpo.direct_align import both_branches_recover, denoise_recover, inversion_recover
    from srpo.models.flux import latent_image_ids, pack_latents, unpack_latents
    from srpo.rewards.base import preprocess_for_clip

    overrides = {}
    if args.blocks:
        overrides["num_layers"], overrides["num_single_layers"] = map(int, args.blocks.split(","))
    if args.heads:
        overrides["num_attention_heads"] = args.heads
    transformer, vae, reward, lora_params = build(args.tiny, device, dtype, overrides)
    build_s = time.perf_counter() - t_start
    cfg = transformer.config
    h = w = size // 8
    img_tokens = (h // 2) * (w // 2)
    tokens = img_tokens + text_tokens
    g = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(1, 16, h, w, device=device, generator=g)
    eps = torch.randn(1, 16, h, w, device=device, generator=g)
    text = torch.randn(1, text_tokens, cfg.joint_attention_dim, device=device, dtype=dtype, generator=g)
    pooled = torch.randn(1, cfg.pooled_projection_dim, device=device, dtype=dtype, generator=g)
    txt_ids = torch.zeros(text_tokens, 3, device=device)
    img_ids = latent_image_ids(h, w, device)
    guidance = torch.full((1,), 3.5, device=device)
    optimizer = torch.optim.AdamW(lora_params, lr=1e-6)

    def velocity(model):
        def v(x, sigma):  # x [n,16,h,w]: the prompt's conditioning repeated n times
            n = x.shape[0]
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                out = model(hidden_states=pack_latents(x).to(dtype), timestep=sigma.to(dtype),
                            guidance=guidance.expand(n), pooled_projections=pooled.expand(n, -1),
                            encoder_hidden_states=text.expand(n, -1, -1), txt_ids=txt_ids,
                            img_ids=img_ids, return_dict=False)[0]
            return unpack_latents(out.float(), h, w)
        return v

    rb = args.rollout_batch
    roll_eps = torch.randn(rb, 16, h, w, device=device, generator=g)
    roll_cond = dict(pooled_projections=pooled.expand(rb, -1), encoder_hidden_states=text.expand(rb, -1, -1),
                     guidance=guidance.expand(rb))

    def rollout_step(model):
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            model(hidden_states=pack_latents(roll_eps).to(dtype), timestep=torch.full((rb,), 0.9, device=device,
                  dtype=dtype), txt_ids=txt_ids, img_ids=img_ids, return_dict=False, **roll_cond)

    def micro_steps(model, fused: bool):  # x0hat of each micro-step: the two branches apart, or one batch of 2
        if fused:
            yield torch.cat(both_branches_recover(velocity(model), x0, eps, 0.85, 0.02))
            return
        for recover in (denoise_recover, inversion_recover):
            yield recover(velocity(model), x0, eps, 0.85, 0.02)

    def update(model, fused: bool, channels_last: bool):  # the VAE's weights must be in the same layout
        layout = torch.channels_last if channels_last else torch.contiguous_format
        optimizer.zero_grad(set_to_none=True)
        for x0_hat in micro_steps(model, fused):
            if args.transformer_only:
                x0_hat.square().flatten(1).mean(1).sum().backward()
                continue
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                z = (x0_hat / 0.3611 + 0.1159).to(dtype).contiguous(memory_format=layout)
                images = vae.decode(z, return_dict=False)[0]
                feats = reward(preprocess_for_clip((images.float() / 2 + 0.5).clamp(0, 1), 224).to(dtype))
            (-feats.float().mean(dim=-1).sum()).backward()  # each branch's sample counts once
        torch.nn.utils.clip_grad_norm_(lora_params, 0.1)
        optimizer.step()

    peak, peak_source = card_peak(device)
    fwd = flux_forward_flops(tokens) if not (args.tiny or overrides) else None
    results = {"benchmark": "gpu_step", "tiny": args.tiny, "overrides": overrides,
               "transformer_only": args.transformer_only, "rollout_batch": rb,
               "compile_mode": args.compile_mode,
               "device": device, "size": size, "tokens": tokens,
               "peak_flops": peak, "peak_source": peak_source, "build_seconds": build_s,
               "transformer_params": sum(p.numel() for p in transformer.parameters()),
               "lora_params": sum(p.numel() for p in lora_params), "machine": machine()}
    passes = [("eager", transformer)]
    for name, model in passes:
        roll = time_it(lambda: rollout_step(model), args.repeats, warmup=2, sync=sync)
        entry = {"rollout_seconds_per_step": sorted(roll)[len(roll) // 2]}
        entry["rollout_images_per_second"] = rb / entry["rollout_seconds_per_step"]  # one sampler step each
        if fwd is not None:
            entry["rollout_mfu"] = rb * fwd / entry["rollout_seconds_per_step"] / peak
        variants = [("", False, False), ("_fused", True, False)]  # the branches apart, then as one batch of 2
        if not args.transformer_only:  # then apart with the VAE in channels-last (NHWC) convolutions
            variants.append(("_vae_channels_last", False, True))
        for suffix, fused, channels_last in variants:
            vae.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            if sync:
                torch.cuda.reset_peak_memory_stats()
            try:
                train = time_it(lambda: update(model, fused, channels_last), args.repeats, warmup=1, sync=sync)
            except torch.OutOfMemoryError as err:  # twice a micro-step's activations may not fit: say so, go on
                entry[f"train_error{suffix}"] = f"out of memory: {str(err)[:200]}"
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                continue
            entry[f"train_seconds_per_update{suffix}"] = sorted(train)[len(train) // 2]
            if sync:
                entry[f"peak_memory_gb{suffix}"] = torch.cuda.max_memory_allocated() / 2**30
            if fwd is not None:
                entry[f"train_mfu{suffix}"] = 2 * 3 * fwd / entry[f"train_seconds_per_update{suffix}"] / peak
        if args.profile:  # is the pass bound by its kernels or by the host?
            vae.to(memory_format=torch.contiguous_format)
            entry["profile_update"] = profile_once(lambda: update(model, False, False), device)
            entry["profile_rollout"] = profile_once(lambda: rollout_step(model), device)
        results[name] = entry
        print(name, {k: v for k, v in entry.items() if not k.startswith("profile")}, flush=True)
        if name == "eager" and sync:  # a timeout during compilation keeps the eager figures (last line so far)
            emit({**results, "total_seconds": time.perf_counter() - t_start, "partial": True})
        use_compile = args.compile == "yes" or (args.compile == "auto" and device == "cuda")
        if name == "eager" and use_compile and time.perf_counter() - t_start < args.budget_s:
            try:
                transformer.compile_repeated_blocks(fullgraph=False, dynamic=False,
                                                    mode=None if args.compile_mode == "default" else args.compile_mode)
                passes.append(("compiled", transformer))
            except Exception as err:  # report, don't hide
                results["compile_error"] = repr(err)[:500]
        elif name == "eager" and use_compile:
            results["compile_skipped"] = f"time budget of {args.budget_s} s reached"
    results["total_seconds"] = time.perf_counter() - t_start
    emit(results)


if __name__ == "__main__":
    main()
