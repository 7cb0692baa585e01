"""Tiny pipelines of every family but FLUX.1 (FLUX.1 Kontext reuses its parts), built offline like ``builtin:tiny-flux``.

Each builder makes the family's real diffusers pipeline class from small configs with random
weights drawn from a seed, and tokenizers made offline (open_clip's CLIP BPE, a Unigram T5 over a
word list, a byte-level BPE in Qwen's format: see :mod:`srpo.models.tokenizers`). The folder is
written with ``save_pretrained`` and read back through the same ``from_pretrained`` code a real
checkpoint uses. Normalisation statistics (latent mean/std, FLUX.2's batch-norm) are set away
from the identity so that a missing (de)normalisation shows in the tests.

``TINY_FAMILY_BUILDERS`` maps the built-in names (``builtin:tiny-sd3`` ...) to the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from srpo.io import atomic_directory, cache_dir
from srpo.models.tokenizers import clip_tokenizer, qwen2_tokenizer, t5_tokenizer
from srpo.published import provide_builder

TEXT_MAX_LENGTH = 64  # tokens; the tiny tokenizers' model_max_length (what the adapters pad to)


def _flux_like_vae(latent_channels: int = 4, channels: int = 8, **kwargs):
    """A 4-level (x8) ``AutoencoderKL`` of tiny width (FLUX.1, Z-Image and, with SD3.5's factors, SD3)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(channels,) * 4, layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
        mid_block_add_attention=False, **kwargs)


def _qwen3_config(tok, num_layers: int, hidden: int = 16):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                       max_position_embeddings=256, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       bos_token_id=None, tie_word_embeddings=False)


def _spread(n: int, lo: float, hi: float) -> list[float]:
    return torch.linspace(lo, hi, n).tolist()


def build_tiny_qwen_image(seed: int = 0):
    """``QwenImagePipeline``: Qwen2.5-VL text encoder, ``AutoencoderKLQwenImage`` (x8, mean/std), 2x2 packing."""
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    z, hidden = 4, 16
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * z, out_channels=z, num_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=hidden, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=z, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=_spread(z, -0.5, 0.5), latents_std=_spread(z, 0.7, 1.6))
    tok = qwen2_tokenizer(model_max_length=TEXT_MAX_LENGTH)
    ids = tok.convert_tokens_to_ids
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config={"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": len(tok),
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0, "max_position_embeddings": 512, "bos_token_id": None,
                     "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": hidden},
        hidden_size=hidden, vocab_size=len(tok), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), vision_token_id=ids("<|image_pad|>"),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"))).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(  # Qwen-Image's own scheduler settings
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
        max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")
    return QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                             transformer=transformer)


def build_tiny_sd3(seed: int = 0):
    """``StableDiffusion3Pipeline``: CLIP-L + CLIP-G + T5, patch-embedded (unpacked) latents, SD3.5's VAE factors."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip_dim, t5_dim = 16, 32  # the two CLIPs' states (2 x 16) are padded to T5's width
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=t5_dim, caption_projection_dim=16, pooled_projection_dim=2 * clip_dim,
        out_channels=4, pos_embed_max_size=32, qk_norm="rms_norm", dual_attention_layers=(0,))
    vae = _flux_like_vae(scaling_factor=1.5305, shift_factor=0.0609)
    clips, toks = [], []
    for _ in range(2):
        tok = clip_tokenizer(77)
        clips.append(CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tok), hidden_size=clip_dim, intermediate_size=2 * clip_dim, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=clip_dim,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)))
        toks.append(tok)
    tok_t5 = t5_tokenizer(model_max_length=TEXT_MAX_LENGTH)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok_t5), d_model=t5_dim, d_kv=8, d_ff=2 * t5_dim, num_layers=2,
                                 num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clips[0], tokenizer=toks[0], text_encoder_2=clips[1], tokenizer_2=toks[1],
        text_encoder_3=t5, tokenizer_3=tok_t5)


def _tiny_flux2_parts(guidance_embeds: bool, text_dim: int):
    """The transformer, VAE (x8, batch-norm statistics set) and scheduler FLUX.2 [dev] and [klein] share."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    c = 4  # VAE latent channels; the transformer sees 2x2-patchified 4c channels
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * c, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=text_dim, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=guidance_embeds)
    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8,) * 4, layers_per_block=1,
        latent_channels=c, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
        mid_block_add_attention=False)
    with torch.no_grad():
        vae.bn.running_mean.copy_(torch.linspace(-0.3, 0.3, 4 * c))
        vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, 4 * c))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")
    return transformer, vae, scheduler


def build_tiny_flux2(seed: int = 0):
    """``Flux2Pipeline`` ([dev]): a Mistral3 text encoder (31 hidden states: layers 10, 20, 30 are read), distilled guidance."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    torch.manual_seed(seed)
    hidden = 16
    transformer, vae, scheduler = _tiny_flux2_parts(guidance_embeds=True, text_dim=3 * hidden)
    tok = qwen2_tokenizer(model_max_length=TEXT_MAX_LENGTH)
    tok.add_tokens(["[IMG]", "[IMG_BREAK]", "[IMG_END]"], special_tokens=True)
    processor = PixtralProcessor(image_processor=PixtralImageProcessor(patch_size=8), tokenizer=tok, patch_size=8,
                                 chat_template=tok.chat_template)
    text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": len(tok), "hidden_size": hidden,
                     "intermediate_size": 2 * hidden, "max_position_embeddings": 256, "num_attention_heads": 2,
                     "num_hidden_layers": 30, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": None,
                     "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": None},
        vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 16, "image_size": 32, "patch_size": 8, "num_channels": 3, "head_dim": 8},
        image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=1, vision_feature_layer=-1))
    return Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=processor,
                         transformer=transformer)


def build_tiny_flux2_klein(seed: int = 0, is_distilled: bool = False):
    """``Flux2KleinPipeline``: a Qwen3 text encoder (layers 9, 18, 27 are read); base (true CFG) unless distilled."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    hidden = 16
    transformer, vae, scheduler = _tiny_flux2_parts(guidance_embeds=False, text_dim=3 * hidden)
    tok = qwen2_tokenizer(model_max_length=TEXT_MAX_LENGTH)
    text_encoder = Qwen3ForCausalLM(_qwen3_config(tok, num_layers=27, hidden=hidden))
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                              transformer=transformer, is_distilled=is_distilled)


def build_tiny_z_image(seed: int = 0):
    """``ZImagePipeline``: a Qwen3 text encoder (second-to-last states, unpadded), x8 ``AutoencoderKL``, list inputs."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    torch.manual_seed(seed)
    hidden = 16
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=1, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=hidden, rope_theta=256.0,
        t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    with torch.no_grad():  # created with torch.empty: give them values
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    vae = _flux_like_vae(scaling_factor=0.3611, shift_factor=0.1159)
    tok = qwen2_tokenizer(model_max_length=TEXT_MAX_LENGTH)
    text_encoder = Qwen3Model(_qwen3_config(tok, num_layers=2, hidden=hidden))
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=text_encoder,
                          tokenizer=tok, transformer=transformer)


def build_tiny_flux_kontext(seed: int = 0):
    """``FluxKontextPipeline``: the tiny FLUX.1's parts (``builtin:tiny-flux``'s sizes) with Kontext's
    scheduler (dynamic shifting from the noisy tokens' count, FLUX.1 Kontext [dev]'s settings)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline

    from srpo.models.tiny import build_tiny_flux_pipeline

    parts = build_tiny_flux_pipeline(seed=seed).components
    parts["scheduler"] = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    return FluxKontextPipeline(**{k: v for k, v in parts.items() if k not in ("image_encoder", "feature_extractor")})


def build_tiny_qwen_image_edit(seed: int = 0, plus: bool = False):
    """``QwenImageEditPipeline`` (``plus``: ``QwenImageEditPlusPipeline``): the tiny Qwen-Image's parts with a
    Qwen2-VL processor (the text encoder reads the sources)."""
    import diffusers
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    parts = build_tiny_qwen_image(seed).components
    tok = parts["tokenizer"]
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                 tokenizer=tok, chat_template=tok.chat_template)
    pipeline = diffusers.QwenImageEditPlusPipeline if plus else diffusers.QwenImageEditPipeline
    return pipeline(processor=processor, **parts)


TINY_FAMILY_BUILDERS: dict[str, Callable] = {
    "tiny-qwen-image": build_tiny_qwen_image,
    "tiny-sd3": build_tiny_sd3,
    "tiny-flux2": build_tiny_flux2,
    "tiny-flux2-klein": build_tiny_flux2_klein,
    "tiny-z-image": build_tiny_z_image,
    "tiny-flux-kontext": build_tiny_flux_kontext,
    "tiny-qwen-image-edit": build_tiny_qwen_image_edit,
    "tiny-qwen-image-edit-plus": lambda seed=0: build_tiny_qwen_image_edit(seed, plus=True),
}


def save_tiny_family(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline ``name`` and ``save_pretrained`` it (safetensors), atomically."""
    if name not in TINY_FAMILY_BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}: known are {sorted(TINY_FAMILY_BUILDERS)}")
    with atomic_directory(Path(out_dir)) as tmp:
        TINY_FAMILY_BUILDERS[name](seed).save_pretrained(tmp, safe_serialization=True)
    return Path(out_dir)


def builtin_family_path(name: str, seed: int = 0) -> Path:
    """The folder of built-in tiny model ``name`` in the cache, built on first use."""
    path = cache_dir() / "builtin" / f"{name}-seed{seed}"
    if not (path / "model_index.json").exists():
        save_tiny_family(name, path, seed)
    return path


def _builtin_folder(name: str):
    """The ``builtin:<name>`` builder this module provides to :mod:`srpo.published` (family/seed keywords)."""
    return lambda *, family=None, seed=0: builtin_family_path(name, seed)


for _name in TINY_FAMILY_BUILDERS:
    provide_builder("policy", _name, _builtin_folder(_name))
