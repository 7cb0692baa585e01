"""FLUX-sized rollout and training cost on one GPU (random weights, LoRA, 720 x 720).

    python -m benchmarks.gpu_step            # on a GPU: FLUX.1 size (19 double + 38 single blocks, width 3072)
    python -m benchmarks.gpu_step --tiny     # anywhere (CPU too): a tiny FLUX, to check the script
    python -m benchmarks.gpu_step --count-flops-only   # anywhere, in seconds: the FLOP counts alone
    python -m benchmarks.gpu_step --family sd3         # another family's transformer at real size
    python -m benchmarks.gpu_step --family all --count-flops-only   # every family's counts (meta device)

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
  time over wall time; ``launches``; the kernels and the ops that took longest);
- model-FLOPs utilisation, counting FLOPs as the issue defines them: forward
  ``2 * P_tok * N + L * 4 * width * N**2`` with N image + text tokens, L blocks and P_tok the
  blocks' matrix parameters that every token passes through (FLUX.1: ``2 * 6.46e9 * N + 57 * 4 *
  3072 * N**2``; :func:`flux_flop_terms` derives both from the model's config, so ``--tiny`` and
  ``--blocks`` report MFU too, on a CPU against its measured fp32 matmul peak), backward twice
  the forward (so an update of two micro-steps counts 6 forward-equivalents), over the card's
  dense bf16 peak. The training MFU is not a lower bound: with LoRA the frozen base weights get
  no weight gradients, so the transformer does about 2.1 of the 3 forward-equivalents counted per
  micro-step and the training MFU overstates its real use about 1.4x; the VAE decoder and the
  reward tower, which the count leaves out (~9 % of the counted FLOPs, ~12 % of the work really
  done), offset part of that: at FLUX.1 size all the work done is ~0.81x the count. The rollout
  MFU counts only work that is done. ``flops`` in the JSON has the counts by torch's FLOP counter
  on the meta device (no arithmetic done): the transformer's forward, its forward + backward
  with LoRA, the VAE decode and the reward tower forward and backward (to their inputs), per
  micro-step of batch 1. ``--transformer-only`` leaves the VAE and reward out of the update.
Then the same with ``torch.compile`` on the repeated transformer blocks, if time allows.

``--json-out PATH`` also writes the result to PATH, after every measurement (``"partial": true``
until the end), so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import (cpu_matmul_peak_gflops, emit, flop_counter, machine, matmul_peak_gflops, median,
                               profile_once, time_it, write_json)

FLUX_SIZE = dict(num_layers=19, num_single_layers=38, num_attention_heads=24, attention_head_dim=128,
                 axes_dims_rope=(16, 56, 56), joint_attention_dim=4096, pooled_projection_dim=768,
                 in_channels=64, guidance_embeds=True)
TINY = dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=16,
            axes_dims_rope=(4, 6, 6), joint_attention_dim=32, pooled_projection_dim=32, in_channels=64,
            guidance_embeds=True)
#: FLUX.1's VAE architecture, and a tiny one of the same kind.
FLUX_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=2,
                use_quant_conv=False, use_post_quant_conv=False)
TINY_VAE = dict(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, norm_num_groups=4,
                layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False)
#: Dense bf16 peaks (FLOP/s) of common cards, by a substring of the device name.
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "H20": 148e12}


def flux_flop_terms(config) -> tuple[float, float]:
    """``(P_tok, attention coefficient)`` of the issue's forward estimate ``2 P_tok N + c N^2``.

    From a FluxTransformer2DModel config (a dict or the model's ``config``): width ``w`` = heads x
    head dim, ``L`` = double + single blocks, MLP ratio 4 (fixed in diffusers' FLUX blocks). Per
    token, a double block's stream has Q, K, V (3 w^2), the attention output (w^2) and the MLP (2 x
    4 w^2): 12 w^2; a single block its fused Q, K, V + MLP input (7 w^2) and fused output (5 w^2):
    12 w^2. So ``P_tok = 12 L w^2`` (FLUX.1: 6.455e9, the issue's 6.46e9). Attention's Q K^T and
    A V take ``2 N^2 w`` FLOPs each per block: ``c = 4 L w`` (FLUX.1: 57 x 4 x 3072). Embedders,
    modulation and the output layer are left out, as the issue leaves them out (0.01 % at FLUX.1
    size by torch's counter).
    """
    width = config["num_attention_heads"] * config["attention_head_dim"]
    blocks = config["num_layers"] + config["num_single_layers"]
    return 12 * blocks * width**2, 4 * blocks * width


def flux_forward_flops(tokens: int, config=None) -> float:
    """The issue's estimate of one FLUX forward over ``tokens`` image + text tokens (FLUX.1 by default)."""
    p_tok, attention = flux_flop_terms(FLUX_SIZE if config is None else config)
    return 2 * p_tok * tokens + attention * tokens**2


def card_peak(device: str, tiny: bool = False) -> tuple[float, str]:
    """FLOP/s the MFU divides by. On the CPU the best of several matmul sizes, as step_cost (one
    product can read low in a dip); ``tiny`` (a check of the script) measures small sizes, as ``--quick``."""
    if device == "cpu":
        sizes = (256, 512) if tiny else (1024, 2048, 4096)
        return cpu_matmul_peak_gflops(sizes) * 1e9, f"measured fp32 matmul peak (best of {', '.join(map(str, sizes))})"
    name = torch.cuda.get_device_name()
    for key, peak in BF16_PEAK.items():
        if key in name:
            return peak, f"{name} dense bf16 spec"
    return matmul_peak_gflops(8192, device="cuda", dtype=torch.bfloat16) * 1e9, f"{name} measured bf16 matmul"


def build(tiny: bool, device: str, dtype, overrides: dict):
    """FLUX.1's transformer (LoRA r16) and VAE, the reward tower and its image side, and the LoRA parameters."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from srpo.models.flux import LORA_TARGETS as FLUX_LORA_TARGETS
    from srpo.training.lora import add_lora

    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise 12B parameters directly in bf16 on the GPU
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**{**(TINY if tiny else FLUX_SIZE), **overrides})
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.device(device):
        vae = AutoencoderKL(**(TINY_VAE if tiny else FLUX_VAE)).to(dtype)
    vae.requires_grad_(False)
    params = add_lora(transformer, rank=16, alpha=16, targets=FLUX_LORA_TARGETS)
    reward, side = build_reward(tiny, device, dtype)
    return transformer, vae, reward, side, params


def build_reward(tiny: bool, device: str, dtype) -> tuple[torch.nn.Module, int]:
    """The reward's image tower (random weights) and the side it reads: HPS v2.1's ViT-H/14 (224), or
    with ``tiny`` builtin:tiny's ViT."""
    from srpo.rewards.open_clip_reward import (TINY_ARCHITECTURE, create_open_clip_model, image_side,
                                               use_sequence_first_attention)

    model = create_open_clip_model(TINY_ARCHITECTURE if tiny else "ViT-H-14", "meta" if device == "meta" else "cpu")
    model = use_sequence_first_attention(model)
    return model.visual.to(device=device, dtype=dtype).eval().requires_grad_(False), image_side(model)


def count(fn):
    """``(fn(), FLOPs it did)`` by torch's FLOP counter."""
    with flop_counter() as counter:
        out = fn()
    return out, counter.get_total_flops()


def counted_flops(tiny: bool, overrides: dict, size: int, text_tokens: int) -> dict:
    """One micro-step's FLOPs (batch 1), counted by torch's FLOP counter on the meta device.

    Meta tensors carry shapes only: nothing is allocated or computed, so FLUX.1 size counts in
    seconds on a CPU. Counted: the transformer's forward (no LoRA: the issue's formula's subject),
    its forward + backward with LoRA rank 16 as trained here (frozen base weights: input
    gradients only, plus the adapters'), the VAE decode forward and its backward to the latent,
    the reward tower's forward (after CLIP preprocessing) and its backward to the pixels. Norms,
    elementwise work and resampling have no formulas in torch's counter and are not counted.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from srpo.rewards.base import preprocess_for_clip
    from srpo.models.flux import LORA_TARGETS as FLUX_LORA_TARGETS
    from srpo.training.lora import add_lora

    config = {**(TINY if tiny else FLUX_SIZE), **overrides}
    h = w = size // 8
    img_tokens = (h // 2) * (w // 2)
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**config).requires_grad_(False)
        inputs = dict(hidden_states=torch.randn(1, img_tokens, config["in_channels"]),
                      encoder_hidden_states=torch.randn(1, text_tokens, config["joint_attention_dim"]),
                      pooled_projections=torch.randn(1, config["pooled_projection_dim"]),
                      timestep=torch.ones(1), guidance=torch.ones(1), img_ids=torch.zeros(img_tokens, 3),
                      txt_ids=torch.zeros(text_tokens, 3), return_dict=False)
        vae = AutoencoderKL(**(TINY_VAE if tiny else FLUX_VAE)).requires_grad_(False)
        latent = torch.randn(1, 16, h, w, requires_grad=True)
    reward, side = build_reward(tiny, "meta", torch.float32)
    _, forward = count(lambda: transformer(**inputs)[0])
    add_lora(transformer, rank=16, alpha=16, targets=FLUX_LORA_TARGETS)
    out, lora_forward = count(lambda: transformer(**inputs)[0])
    _, lora_backward = count(lambda: out.square().mean().backward())
    images, vae_forward = count(lambda: vae.decode(latent, return_dict=False)[0])
    pixels = images.detach().requires_grad_()
    feats, reward_forward = count(lambda: reward(preprocess_for_clip((pixels / 2 + 0.5).clamp(0, 1), side)))
    _, reward_backward = count(lambda: feats.mean(dim=-1).sum().backward())
    _, vae_backward = count(lambda: images.backward(pixels.grad))
    formula = flux_forward_flops(img_tokens + text_tokens, config)
    done = lora_forward + lora_backward
    decode_reward = vae_forward + vae_backward + reward_forward + reward_backward
    return {"transformer_forward_formula": formula, "transformer_forward": forward,
            "transformer_forward_backward_lora": done, "vae_decode_forward": vae_forward,
            "vae_decode_backward": vae_backward, "reward_forward": reward_forward,
            "reward_backward": reward_backward, "decode_reward": decode_reward,
            # the count for a micro-step is 3 transformer forwards; with LoRA less is done
            "counted_over_done": 3 * formula / done,
            "decode_reward_share_of_counted": decode_reward / (decode_reward + 3 * formula),
            "decode_reward_share_of_done": decode_reward / (decode_reward + done)}


def family_counted_flops(family: str, tiny: bool, size: int | None = None) -> dict:
    """One update's transformer FLOPs for ``family`` at its default side, on the meta device (batch 1).

    An update of method ``srpo`` is two micro-steps (denoise and inversion), each a transformer
    forward and backward with the family's default LoRA targets (rank 16), then the VAE decode and
    the reward tower (not counted here: FLUX.1's figures in ``counted_flops`` give their size at
    720 px, ~9 % of the counted transformer work). The forward formula comes from the config
    (:func:`benchmarks.family_sizes.flop_terms`); the counter's forward checks it.
    """
    from benchmarks.family_sizes import (REAL_SIZES, build_transformer, family_config, first_output, flop_terms,
                                         forward_inputs, image_tokens, lora_targets)
    from srpo.training.lora import add_lora

    config = family_config(family, tiny)
    spec = REAL_SIZES[family]
    size = size or (64 if tiny else spec["size"])
    text_tokens = 16 if tiny else spec["text_tokens"]
    transformer = build_transformer(family, config).requires_grad_(False)
    args, kwargs = forward_inputs(family, config, size, text_tokens)
    _, forward = count(lambda: transformer(*args, **kwargs))
    add_lora(transformer, rank=16, alpha=16, targets=lora_targets(family, transformer))
    out, lora_forward = count(lambda: first_output(transformer(*args, **kwargs)))
    _, lora_backward = count(lambda: out.square().mean().backward())
    p_tok, attention = flop_terms(family, config)
    tokens = image_tokens(family, config, size) + text_tokens
    formula = 2 * p_tok * tokens + attention * tokens**2
    return {"family": family, "transformer_class": spec["cls"], "config": config, "config_source": spec["source"],
            "size": size, "text_tokens": text_tokens, "tokens": tokens,
            "transformer_params": sum(p.numel() for p in transformer.parameters() if not p.requires_grad),
            "p_tok": p_tok, "attention_coefficient": attention,
            "mfu_formula": f"forward = 2 * {p_tok:.4g} * N + {attention:.4g} * N**2 (N = {tokens}); an update "
                           "counts 2 micro-steps x 3 forward-equivalents; MFU = 6 * forward / seconds / peak",
            "transformer_forward_formula": formula, "transformer_forward": forward,
            "formula_over_counted": formula / forward,
            "transformer_forward_backward_lora": lora_forward + lora_backward,
            "update_counted_formula": 2 * 3 * formula,
            "update_done_lora": 2 * (lora_forward + lora_backward),
            "counted_over_done": 3 * formula / (lora_forward + lora_backward)}


def family_step(args, device: str, dtype) -> dict:
    """On a GPU: ``--family``'s transformer at real size (random bf16 weights, LoRA rank 16), timed.

    A rollout step is one no-grad forward; an update two LoRA forward + backward micro-steps on a
    latent loss (the transformer's part of an SRPO update; ``--transformer-only`` for FLUX.1).
    """
    from benchmarks.family_sizes import (REAL_SIZES, build_transformer, family_config, first_output, flop_terms,
                                         forward_inputs, image_tokens, lora_targets)
    from srpo.training.lora import add_lora

    t_start = time.perf_counter()
    config, spec = family_config(args.family, args.tiny), REAL_SIZES[args.family]
    size = args.size or (64 if args.tiny else spec["size"])
    text_tokens = 16 if args.tiny else spec["text_tokens"]
    torch.manual_seed(0)
    transformer = build_transformer(args.family, config, device, dtype).requires_grad_(False)
    params = add_lora(transformer, rank=16, alpha=16, targets=lora_targets(args.family, transformer))
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    inputs, kwargs = forward_inputs(args.family, config, size, text_tokens, device=device, dtype=dtype)
    build_s = time.perf_counter() - t_start
    sync = device == "cuda"

    def forward():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=sync):
            return first_output(transformer(*inputs, **kwargs))

    def update():
        optimizer.zero_grad(set_to_none=True)
        for _ in range(2):  # the denoise and inversion micro-steps
            forward().float().square().mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()

    def rollout_step():
        with torch.no_grad():
            forward()

    p_tok, attention = flop_terms(args.family, config)
    tokens = image_tokens(args.family, config, size) + text_tokens
    fwd = 2 * p_tok * tokens + attention * tokens**2
    peak, peak_source = card_peak(device, args.tiny)
    roll = median(time_it(rollout_step, args.repeats, warmup=2, sync=sync))
    if sync:
        torch.cuda.reset_peak_memory_stats()
    train = median(time_it(update, args.repeats, warmup=1, sync=sync))
    result = {"benchmark": "gpu_step", "family": args.family, "tiny": args.tiny, "device": device, "size": size,
              "tokens": tokens, "forward_flops": fwd, "peak_flops": peak, "peak_source": peak_source,
              "build_seconds": build_s, "transformer_params": sum(p.numel() for p in transformer.parameters()),
              "lora_params": sum(p.numel() for p in params), "rollout_seconds_per_step": roll,
              "rollout_mfu": fwd / roll / peak, "train_seconds_per_update_transformer_only": train,
              "train_mfu_transformer_only": 2 * 3 * fwd / train / peak, "machine": machine()}
    if sync:
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    result["total_seconds"] = time.perf_counter() - t_start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--family", default="flux",
                        help="model family: flux (the full update below), qwen-image, sd3, flux2, flux2-klein, "
                             "z-image (the transformer at real size, benchmarks/family_sizes.py); with "
                             "--count-flops-only also 'all'")
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
    parser.add_argument("--count-flops-only", action="store_true",
                        help="only count the FLOPs (meta device, seconds, no GPU needed) and print them")
    parser.add_argument("--json-out", default=None,
                        help="also write the JSON result to this file, after every measurement")
    args = parser.parse_args()
    if args.rollout_batch < 1:  # before minutes of building a 12B model
        parser.error("--rollout-batch must be at least 1")
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = args.size or (64 if args.tiny else 720)
    text_tokens = 32 if args.tiny else 512
    sync = device == "cuda"
    overrides = {}
    if args.blocks:
        overrides["num_layers"], overrides["num_single_layers"] = map(int, args.blocks.split(","))
    if args.heads:
        overrides["num_attention_heads"] = args.heads
    if args.family == "all" and not args.count_flops_only:
        parser.error("--family all goes with --count-flops-only")
    if args.count_flops_only and args.family != "flux":
        from benchmarks.family_sizes import REAL_SIZES

        families = list(REAL_SIZES) if args.family == "all" else [args.family]
        counts = {family: family_counted_flops(family, args.tiny, args.size) for family in families}
        emit({"benchmark": "gpu_step", "count_flops_only": True, "tiny": args.tiny, "families": counts,
              "total_seconds": time.perf_counter() - t_start, "machine": machine()}, args.json_out)
        return
    if args.family != "flux":
        emit(family_step(args, device, dtype), args.json_out)
        return
    if args.count_flops_only:
        tokens = (size // 16) ** 2 + text_tokens
        emit({"benchmark": "gpu_step", "count_flops_only": True, "tiny": args.tiny, "overrides": overrides,
              "size": size, "tokens": tokens,
              "flops": counted_flops(args.tiny, overrides, size, text_tokens),
              "total_seconds": time.perf_counter() - t_start, "machine": machine()}, args.json_out)
        return
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(args.cudnn_sdp)  # flash / memory-efficient kernels otherwise

    from srpo.direct_align import both_branches_recover, denoise_recover, inversion_recover
    from srpo.models.flux import latent_image_ids, pack_latents, unpack_latents
    from srpo.rewards.base import preprocess_for_clip

    transformer, vae, reward, side, lora_params = build(args.tiny, device, dtype, overrides)
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
                feats = reward(preprocess_for_clip((images.float() / 2 + 0.5).clamp(0, 1), side).to(dtype))
            (-feats.float().mean(dim=-1).sum()).backward()  # each branch's sample counts once
        torch.nn.utils.clip_grad_norm_(lora_params, 0.1)
        optimizer.step()

    peak, peak_source = card_peak(device, args.tiny)
    fwd = flux_forward_flops(tokens, cfg)  # the formula, from this model's config (any size)
    results = {"benchmark": "gpu_step", "tiny": args.tiny, "overrides": overrides,
               "transformer_only": args.transformer_only, "rollout_batch": rb,
               "compile_mode": args.compile_mode,
               "device": device, "size": size, "tokens": tokens, "forward_flops": fwd,
               "peak_flops": peak, "peak_source": peak_source, "build_seconds": build_s,
               "transformer_params": sum(p.numel() for p in transformer.parameters()),
               "lora_params": sum(p.numel() for p in lora_params), "machine": machine()}

    def save_partial(entry_name: str, entry: dict) -> None:  # what a time limit would otherwise lose
        if args.json_out:
            write_json({**results, entry_name: entry, "partial": True,
                        "total_seconds": time.perf_counter() - t_start}, args.json_out)

    save_partial("eager", {})
    passes = [("eager", transformer)]
    for name, model in passes:
        roll = time_it(lambda: rollout_step(model), args.repeats, warmup=2, sync=sync)
        entry = {"rollout_seconds_per_step": median(roll)}
        entry["rollout_images_per_second"] = rb / entry["rollout_seconds_per_step"]  # one sampler step each
        entry["rollout_mfu"] = rb * fwd / entry["rollout_seconds_per_step"] / peak
        save_partial(name, entry)
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
                save_partial(name, entry)
                continue
            entry[f"train_seconds_per_update{suffix}"] = median(train)
            if sync:
                entry[f"peak_memory_gb{suffix}"] = torch.cuda.max_memory_allocated() / 2**30
            entry[f"train_mfu{suffix}"] = 2 * 3 * fwd / entry[f"train_seconds_per_update{suffix}"] / peak
            save_partial(name, entry)
        if args.profile:  # is the pass bound by its kernels or by the host?
            vae.to(memory_format=torch.contiguous_format)
            entry["profile_update"] = profile_once(lambda: update(model, False, False), device)
            entry["profile_rollout"] = profile_once(lambda: rollout_step(model), device)
        results[name] = entry
        save_partial(name, entry)
        print(name, {k: v for k, v in entry.items() if not k.startswith("profile")}, flush=True)
        if name == "eager" and sync:  # a timeout during compilation keeps the eager figures (last line so far)
            emit({**results, "total_seconds": time.perf_counter() - t_start, "partial": True}, args.json_out)
        use_compile = args.compile == "yes" or (args.compile == "auto" and device == "cuda")
        if name == "eager" and use_compile and time.perf_counter() - t_start < args.budget_s:
            try:
                transformer.compile_repeated_blocks(fullgraph=False, dynamic=False,
                                                    mode=None if args.compile_mode == "default" else args.compile_mode)
                passes.append(("compiled", transformer))
                save_partial("compiled", {})
            except Exception as err:  # report, don't hide
                results["compile_error"] = repr(err)[:500]
        elif name == "eager" and use_compile:
            results["compile_skipped"] = f"time budget of {args.budget_s} s reached"
    # last: seconds of CPU work on shapes alone, the same on any machine (--count-flops-only gives it anywhere)
    try:  # an error here must not lose the measurements above
        results["flops"] = counted_flops(args.tiny, overrides, size, text_tokens)
    except Exception as err:  # report, don't hide
        results["flops_error"] = repr(err)[:500]
    results["total_seconds"] = time.perf_counter() - t_start
    emit(results, args.json_out)


if __name__ == "__main__":
    main()
