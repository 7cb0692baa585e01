"""Tiny FLUX pipelines built from configs, for tests and the CPU default.

Nothing can be downloaded here, so the CPU runs use a FLUX pipeline of the real architecture
(diffusers ``FluxTransformer2DModel``, an x8 ``AutoencoderKL``, CLIP and T5 text encoders) at a
tiny width, with random weights from a fixed seed and tokenizers made offline. It is saved with
``save_pretrained`` and then loaded through the same ``from_pretrained`` code as FLUX.1-dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict

from srpo.io import atomic_directory, cache_dir
from srpo.models.tokenizers import clip_tokenizer, t5_tokenizer
from srpo.published import provide_builder


class TinyFluxSpec(BaseModel):
    """Sizes of a small FLUX pipeline. ``head_dim`` must equal ``sum(axes_dims_rope)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_layers: int = 1  # double-stream blocks (FLUX.1: 19)
    num_single_layers: int = 1  # single-stream blocks (FLUX.1: 38)
    num_heads: int = 2
    head_dim: int = 16
    axes_dims_rope: tuple[int, int, int] = (4, 6, 6)
    text_dim: int = 32  # T5 d_model = joint_attention_dim
    pooled_dim: int = 32  # CLIP hidden size = pooled_projection_dim
    latent_channels: int = 4  # FLUX.1: 16
    vae_channels: int = 8
    vae_block_channels: Optional[tuple[int, int, int, int]] = None  # per VAE level; default 4 x vae_channels
    vae_norm_groups: Optional[int] = None  # default min(vae_channels, 4)
    vae_layers_per_block: int = 1  # FLUX.1: 2
    vae_mid_attention: bool = False  # FLUX.1: True
    t5_max_length: int = 32
    t5_words: Optional[tuple[str, ...]] = None  # T5 vocabulary; default DEFAULT_T5_WORDS


def build_tiny_flux_pipeline(spec: TinyFluxSpec = TinyFluxSpec(), seed: int = 0):
    """A ``FluxPipeline`` of the FLUX architecture with random weights drawn from ``seed``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if spec.head_dim != sum(spec.axes_dims_rope):
        raise ValueError(f"head_dim {spec.head_dim} must equal sum(axes_dims_rope) = {sum(spec.axes_dims_rope)}")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * spec.latent_channels,  # 2x2 packed latent patches
        num_layers=spec.num_layers,
        num_single_layers=spec.num_single_layers,
        attention_head_dim=spec.head_dim,
        num_attention_heads=spec.num_heads,
        joint_attention_dim=spec.text_dim,
        pooled_projection_dim=spec.pooled_dim,
        guidance_embeds=True,
        axes_dims_rope=spec.axes_dims_rope,
    )
    c = spec.vae_channels
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=spec.vae_block_channels or (c, c, c, c),  # 4 levels: x8 like FLUX's VAE
        layers_per_block=spec.vae_layers_per_block, latent_channels=spec.latent_channels,
        norm_num_groups=spec.vae_norm_groups or min(c, 4),
        scaling_factor=0.3611, shift_factor=0.1159,  # FLUX.1's values
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=spec.vae_mid_attention,
    )
    tok_clip = clip_tokenizer(77)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok_clip), hidden_size=spec.pooled_dim, intermediate_size=2 * spec.pooled_dim,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
        projection_dim=spec.pooled_dim, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    tok_t5 = (t5_tokenizer(spec.t5_words, model_max_length=spec.t5_max_length) if spec.t5_words
              else t5_tokenizer(model_max_length=spec.t5_max_length))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tok_t5), d_model=spec.text_dim, d_kv=spec.text_dim // 4, d_ff=2 * spec.text_dim,
        num_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    ))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tok_clip,
                        text_encoder_2=t5, tokenizer_2=tok_t5, transformer=transformer)


def save_tiny_flux(out_dir: str | Path, spec: TinyFluxSpec = TinyFluxSpec(), seed: int = 0) -> Path:
    """Build and ``save_pretrained`` a tiny FLUX pipeline (safetensors), atomically."""
    with atomic_directory(Path(out_dir)) as tmp:
        build_tiny_flux_pipeline(spec, seed).save_pretrained(tmp, safe_serialization=True)
    return Path(out_dir)


def tiny_flux_folder(*, family: str | None = None, seed: int = 0) -> Path:
    """The folder of ``builtin:tiny-flux`` for ``seed``, built on first use (see :mod:`srpo.published`)."""
    path = cache_dir() / "builtin" / f"tiny-flux-seed{seed}"
    if not (path / "model_index.json").exists():
        save_tiny_flux(path, TinyFluxSpec(), seed)
    return path


provide_builder("policy", "tiny-flux", tiny_flux_folder)
