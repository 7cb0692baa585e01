"""Real-size transformer configs of every model family, their FLOP formulas and meta-device inputs.

``benchmarks.gpu_step --family NAME`` builds a family's transformer from its published config
(:data:`srpo.models.published_configs.PUBLISHED`, :func:`family_config`; random
weights; on the meta device when only counting) and counts one update's FLOPs with torch's
counter. Each config names where its numbers come from: the ``transformer/config.json`` the
model's hub folder publishes, as diffusers 0.42.1 reads it (the class defaults of
``Flux2Transformer2DModel``, ``QwenImageTransformer2DModel`` and ``ZImageTransformer2DModel`` are
those published configs; SD3.5 Large and FLUX.2 [klein] 4B differ from theirs).

The forward estimate is the one FLUX.1 uses (:func:`benchmarks.gpu_step.flux_flop_terms`):
``2 * P_tok * N + c * N**2`` with N image + text tokens, ``P_tok`` the block matrix parameters
every token passes through and ``c = 4 * L * width`` for L attention layers over all N tokens.
:func:`flop_terms` derives both from a family's config.
"""

from __future__ import annotations

import torch

from srpo.models.published_configs import PUBLISHED

#: family -> (diffusers transformer class, where its config came from, default side in pixels, text
#: tokens the count assumes); the real-size configs are :data:`srpo.models.published_configs.PUBLISHED`'s (one
#: table for the memory plan and the FLOP counts: :func:`family_config`).
REAL_SIZES: dict[str, dict] = {
    "qwen-image": dict(
        cls="QwenImageTransformer2DModel", size=720, text_tokens=512,
        source="Qwen/Qwen-Image transformer/config.json (20B; = diffusers' class defaults); 720 px: the SRPO "
               "authors' Qwen script; 512 text tokens: the pipeline's max_sequence_length (an upper bound, "
               "prompts are unpadded)"),
    "sd3": dict(
        cls="SD3Transformer2DModel", size=1024, text_tokens=77 + 256,
        source="stabilityai/stable-diffusion-3.5-large transformer/config.json (8B: 38 joint blocks of width "
               "2432, RMS q/k norm); 1024 px native; 77 CLIP + 256 T5 tokens: the pipeline's defaults"),
    "flux2": dict(
        cls="Flux2Transformer2DModel", size=1024, text_tokens=512,
        source="black-forest-labs/FLUX.2-dev transformer/config.json (32B; = diffusers' class defaults); "
               "1024 px; 512 text tokens: the pipeline's max_sequence_length"),
    "flux2-klein": dict(
        cls="Flux2Transformer2DModel", size=1024, text_tokens=512,
        source="black-forest-labs/FLUX.2-klein-4B (4B: 5 double + 20 single blocks of width 3072 = 24 x 128, "
               "text 3 x 2560 from Qwen3-4B, no guidance embedding): checked against Klein4BParams of BFL's "
               "flux2 reference code as public ports (ostris/ai-toolkit and others) carry it; the hub's "
               "config.json itself was not reachable offline"),
    "z-image": dict(
        cls="ZImageTransformer2DModel", size=1024, text_tokens=512,
        source="Tongyi-MAI/Z-Image-Turbo transformer/config.json (6B; = diffusers' class defaults); 1024 px; "
               "512 text tokens: the pipeline's max_sequence_length (an upper bound, prompts are unpadded)"),
}

#: Small overrides that keep each family's block structure (``--tiny``: check the script anywhere).
TINY_OVERRIDES: dict[str, dict] = {
    "qwen-image": dict(num_layers=2, num_attention_heads=2, attention_head_dim=32, joint_attention_dim=32,
                       axes_dims_rope=(8, 12, 12)),
    "sd3": dict(num_layers=2, num_attention_heads=2, attention_head_dim=32, joint_attention_dim=32,
                caption_projection_dim=64, pooled_projection_dim=32, pos_embed_max_size=64),
    "flux2": dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=32,
                  joint_attention_dim=48, axes_dims_rope=(8, 8, 8, 8)),
    "flux2-klein": dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=32,
                        joint_attention_dim=48, axes_dims_rope=(8, 8, 8, 8)),
    "z-image": dict(dim=64, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32,
                    axes_dims=[8, 12, 12]),
}


def family_config(family: str, tiny: bool = False) -> dict:
    """The real-size config of ``family`` (``tiny``: with :data:`TINY_OVERRIDES`)."""
    if family not in REAL_SIZES:
        raise ValueError(f"--family {family!r} is not a known family: use flux or one of {sorted(REAL_SIZES)}")
    return {**PUBLISHED[family]["transformer"], **(TINY_OVERRIDES[family] if tiny else {})}


def flop_terms(family: str, config: dict) -> tuple[float, float]:
    """``(P_tok, c)`` of the forward estimate ``2 P_tok N + c N^2`` for ``family``'s ``config``.

    Per token and block (width w, modulation excluded: it acts once per sample, not per token):
    - Qwen-Image, SD3.5: joint (MM-DiT) blocks; each token's stream has Q, K, V, output (4 w^2) and
      a GELU MLP of ratio 4 (8 w^2): ``P_tok = 12 L w^2`` (SD3.5's last block has no text-stream
      MLP or output: the formula overcounts it by its text tokens' share of one block);
    - FLUX.2: SwiGLU MLPs of ratio r = 3 (in: 2 r w^2, out: r w^2); a double block's stream has
      4 w^2 + 3 r w^2, a single block its fused QKV + MLP input (3 w^2 + 2 r w^2) and fused output
      ((1 + r) w^2): both ``(4 + 3 r) w^2`` = 13 w^2, so ``P_tok = 13 L w^2`` with L = double + single;
    - Z-Image: single-stream blocks with SwiGLU of hidden ``int(8 w / 3)`` (3 matrices), attention
      4 w^2; every token passes its refiner (image tokens the noise refiner, text tokens the
      context refiner) and the main layers: ``P_tok = (n_refiner + n_layers)(4 w^2 + 3 w h)``.
    Attention (Q K^T and A V, ``2 N^2 w`` each per layer) runs over all N tokens in the main
    layers; Z-Image's refiners attend within one kind of tokens, which the estimate leaves out.
    """
    if family in ("qwen-image", "sd3"):
        width, layers = config["num_attention_heads"] * config["attention_head_dim"], config["num_layers"]
        return 12 * layers * width**2, 4 * layers * width
    if family in ("flux2", "flux2-klein"):
        width = config["num_attention_heads"] * config["attention_head_dim"]
        layers, ratio = config["num_layers"] + config["num_single_layers"], config.get("mlp_ratio", 3.0)
        return (4 + 3 * ratio) * layers * width**2, 4 * layers * width
    if family == "z-image":
        width, hidden = config["dim"], int(config["dim"] / 3 * 8)
        per_layer = 4 * width**2 + 3 * width * hidden
        return (config["n_refiner_layers"] + config["n_layers"]) * per_layer, 4 * config["n_layers"] * width
    raise ValueError(f"no FLOP formula for family {family!r}")


def image_tokens(family: str, config: dict, size: int) -> int:
    """Image tokens of a ``size`` x ``size`` image: 16 pixels a token side in every family here."""
    del family, config
    return (size // 16) ** 2


def build_transformer(family: str, config: dict, device="meta", dtype=torch.float32) -> torch.nn.Module:
    """``family``'s transformer from ``config`` with random weights (meta: shapes only, nothing allocated)."""
    import diffusers

    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise billions of parameters directly in the target dtype
    try:
        with torch.device(device):
            return getattr(diffusers, REAL_SIZES[family]["cls"])(**config)
    finally:
        torch.set_default_dtype(default_dtype)


def forward_inputs(family: str, config: dict, size: int, text_tokens: int, batch: int = 1, device="meta",
                   dtype=torch.float32) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of one transformer forward at ``size`` px, as the family's adapter calls it.

    ``args`` holds the latent first: the tensor (or, for Z-Image, the list of tensors) a backward
    differentiates against.
    """
    side = size // 16  # tokens a side
    t = torch.full((batch,), 0.9, device=device, dtype=dtype)
    if family == "z-image":
        latents = [torch.randn(config["in_channels"], 1, 2 * side, 2 * side, device=device, dtype=dtype)
                   for _ in range(batch)]
        captions = [torch.randn(text_tokens, config["cap_feat_dim"], device=device, dtype=dtype)
                    for _ in range(batch)]
        return (latents, 1 - t, captions), dict(return_dict=False)
    text = torch.randn(batch, text_tokens, config["joint_attention_dim"], device=device, dtype=dtype)
    if family == "sd3":
        x = torch.randn(batch, config["in_channels"], 2 * side, 2 * side, device=device, dtype=dtype)
        pooled = torch.randn(batch, config["pooled_projection_dim"], device=device, dtype=dtype)
        return (x,), dict(timestep=t * 1000, encoder_hidden_states=text, pooled_projections=pooled,
                          return_dict=False)
    x = torch.randn(batch, side * side, config["in_channels"], device=device, dtype=dtype)
    if family == "qwen-image":
        return (x,), dict(timestep=t, encoder_hidden_states=text, encoder_hidden_states_mask=None,
                          img_shapes=[[(1, side, side)]] * batch, return_dict=False)
    # FLUX.2: 4-axis positions (t, h, w, l) for image and text tokens, as the pipeline prepares them
    grid = torch.cartesian_prod(torch.arange(1), torch.arange(side), torch.arange(side), torch.arange(1))
    img_ids = grid.to(device=device, dtype=dtype).expand(batch, -1, -1)  # [B, side^2, 4]
    txt_ids = torch.zeros(batch, text_tokens, 4, device=device, dtype=dtype)
    txt_ids[..., 3] = torch.arange(text_tokens, device=device, dtype=dtype)
    guidance = torch.full((batch,), 4.0, device=device, dtype=dtype) if config.get("guidance_embeds") else None
    return (x,), dict(timestep=t, guidance=guidance, encoder_hidden_states=text, txt_ids=txt_ids,
                      img_ids=img_ids, return_dict=False)


def first_output(out) -> torch.Tensor:
    """The velocity tensor of a transformer's ``return_dict=False`` output (Z-Image: its list, stacked)."""
    out = out[0]
    return torch.stack(out) if isinstance(out, (list, tuple)) else out


def lora_targets(family: str, transformer: torch.nn.Module) -> list[str]:
    """The family adapter's default LoRA targets for this transformer (what training adapts)."""
    import inspect
    from types import SimpleNamespace

    from srpo.models.families import adapter_class

    attr = inspect.getattr_static(adapter_class(family), "lora_targets")
    if isinstance(attr, property):  # FLUX.2: the targets name the single blocks of this transformer
        return list(attr.fget(SimpleNamespace(transformer=transformer)))
    return list(attr)
