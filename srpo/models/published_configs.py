"""The published transformer and VAE configs of each family's flagship model, for work without weights.

The memory plan (:mod:`srpo.training.memory`) reads a local or built-in model folder's own
``config.json`` files; for a hub id it cannot download here it builds these configs on the meta
device. The FLOP counts at real size (``benchmarks.family_sizes``) read them too. Typed from the
models' ``config.json`` files (FLUX.2 [dev], Qwen-Image and Z-Image equal diffusers' class defaults,
which ``tests/models/test_published_configs.py`` checks). A new family adds its row here, next to its
adapter and its entry in :data:`srpo.models.families.FAMILIES`.
"""

from __future__ import annotations


def kl_vae(**latent_stats) -> dict:
    """The 16-channel ``AutoencoderKL`` of FLUX.1 and SD3.5, with its latent ``scaling_factor`` / ``shift_factor``."""
    return dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False, **latent_stats)


#: FLUX.2 [dev]'s transformer (diffusers' Flux2Transformer2DModel defaults) and its 32-channel VAE.
FLUX2_DEV = dict(patch_size=1, in_channels=128, out_channels=None, num_layers=8, num_single_layers=48,
                 attention_head_dim=128, num_attention_heads=48, joint_attention_dim=15360,
                 timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=[32, 32, 32, 32], guidance_embeds=True)
FLUX2_VAE = dict(latent_channels=32, block_out_channels=[128, 256, 512, 512])

#: FLUX.1 [dev]'s transformer (also FLUX.1 Kontext [dev]'s).
FLUX1_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                 axes_dims_rope=[16, 56, 56])

#: Qwen-Image's transformer and VAE (also Qwen-Image-Edit's).
QWEN_IMAGE = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=[16, 56, 56])
QWEN_IMAGE_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                      temperal_downsample=[False, True, True])

#: Published transformer / VAE configs (their ``config.json``) of each family's flagship model, with
#: the text length the adapter pads to and the text encoders' parameter count (held by the
#: training process). Used when the config names a hub id: nothing is downloaded.
PUBLISHED: dict[str, dict] = {
    "flux": dict(model="black-forest-labs/FLUX.1-dev", resolution=1024, text_tokens=512, text_encoder_params=4.89e9,
                 transformer=FLUX1_DEV,
                 vae_class="AutoencoderKL",
                 vae=kl_vae(scaling_factor=0.3611, shift_factor=0.1159)),
    # Kontext [dev]: FLUX.1 [dev]'s transformer and VAE (its config.json equals FLUX.1-dev's); the source
    # image adds as many image tokens again (source_tokens) at the same resolution
    "flux-kontext": dict(model="black-forest-labs/FLUX.1-Kontext-dev", resolution=1024, text_tokens=512,
                         text_encoder_params=4.89e9, source_tokens=4096,
                         transformer=FLUX1_DEV, vae_class="AutoencoderKL",
                         vae=kl_vae(scaling_factor=0.3611, shift_factor=0.1159)),
    "qwen-image": dict(model="Qwen/Qwen-Image", resolution=1328, text_tokens=512, text_encoder_params=8.29e9,
                       transformer=QWEN_IMAGE, vae_class="AutoencoderKLQwenImage", vae=QWEN_IMAGE_VAE),
    # Qwen-Image-Edit: Qwen-Image's transformer, VAE and text encoder; the pipeline resizes the source to 1024^2
    # pixels (source_tokens at 1024 px), and the text rows hold it too (37 x 37 merged 28-pixel patches of
    # Qwen2.5-VL's processor, 1369 tokens, plus the instruction: about 1400 text tokens)
    "qwen-image-edit": dict(model="Qwen/Qwen-Image-Edit", resolution=1024, text_tokens=1400, text_encoder_params=8.29e9,
                            source_tokens=4096, transformer=QWEN_IMAGE, vae_class="AutoencoderKLQwenImage",
                            vae=QWEN_IMAGE_VAE),
    # Edit-2509 (Plus): the same transformer; the text rows hold each source at 384^2 pixels (14 x 14 merged
    # 28-pixel patches: 196 tokens) and the instruction: about 700 text tokens with its three sources
    "qwen-image-edit-plus": dict(model="Qwen/Qwen-Image-Edit-2509", resolution=1024, text_tokens=700,
                                 text_encoder_params=8.29e9, source_tokens=4096, transformer=QWEN_IMAGE,
                                 vae_class="AutoencoderKLQwenImage", vae=QWEN_IMAGE_VAE),
    "sd3": dict(model="stabilityai/stable-diffusion-3.5-large", resolution=1024, text_tokens=333,
                text_encoder_params=5.58e9,
                transformer=dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                                 num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                                 pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
                                 qk_norm="rms_norm"),
                vae_class="AutoencoderKL",
                vae=kl_vae(scaling_factor=1.5305, shift_factor=0.0609)),
    "flux2": dict(model="black-forest-labs/FLUX.2-dev", resolution=1024, text_tokens=512, text_encoder_params=24.0e9,
                  transformer=FLUX2_DEV, vae_class="AutoencoderKLFlux2", vae=FLUX2_VAE),
    # [klein] 4B: FLUX.2's blocks, fewer and narrower, Qwen3-4B's 3 x 2560 text rows, no guidance embedding
    "flux2-klein": dict(model="black-forest-labs/FLUX.2-klein-4B", resolution=1024, text_tokens=512,
                        text_encoder_params=4.02e9,
                        transformer={**FLUX2_DEV, "num_layers": 5, "num_single_layers": 20, "num_attention_heads": 24,
                                     "joint_attention_dim": 7680, "guidance_embeds": False},
                        vae_class="AutoencoderKLFlux2", vae=FLUX2_VAE),
    "z-image": dict(model="Tongyi-MAI/Z-Image-Turbo", resolution=1024, text_tokens=512, text_encoder_params=4.02e9,
                    transformer=dict(all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30,
                                     n_refiner_layers=2, n_heads=30, n_kv_heads=30, qk_norm=True, cap_feat_dim=2560,
                                     axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512]),
                    vae_class="AutoencoderKL",
                    vae=dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                             down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                             layers_per_block=2, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                             use_post_quant_conv=False)),
}
