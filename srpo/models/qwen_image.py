"""Qwen-Image through diffusers' ``QwenImagePipeline`` (see :mod:`srpo.models.base` for the interface).

Qwen-Image packs 2x2 latent patches into tokens like FLUX, conditions on the last hidden states of
Qwen2.5-VL (each prompt at its own length, with a mask) and uses true classifier-free guidance
with a negative prompt, rescaled to the conditional prediction's norm per token. Its VAE
(``AutoencoderKLQwenImage``, a video VAE run on one frame) is normalised by per-channel latent
means and standard deviations: our latent is ``(z - mean) / std``.
"""

from __future__ import annotations

import torch

from srpo.models.base import JOINT_ATTENTION_TARGETS, Policy, TextCond
from srpo.models.flux import pack_latents, unpack_latents


class QwenImagePolicy(Policy):
    """Qwen-Image: FLUX's 2x2 packing, masked Qwen2.5-VL text states, norm-rescaled true CFG."""

    family = "qwen-image"
    pipeline_class = "QwenImagePipeline"
    guidance_kind = "cfg"
    lora_targets = (*JOINT_ATTENTION_TARGETS, "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2")
    default_num_steps = 50
    default_guidance = 4.0  # the pipeline's true_cfg_scale
    text_with_mask = True
    max_sequence_length = 512  # the pipeline's default

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** len(self.pipe.vae.temperal_downsample)

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.z_dim

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return pack_latents(x)

    def unpack(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return unpack_latents(tokens, h, w)

    def _encode_missing(self, prompts: list[str]) -> list[tuple]:
        embeds, mask = self.pipe.encode_prompt(prompts, device=self.device, max_sequence_length=self.max_sequence_length)
        if mask is None:
            return [(e, None) for e in embeds]
        return [(e[m.bool()], None) for e, m in zip(embeds, mask)]  # each prompt at its own length

    def image_tokens(self, x: torch.Tensor, cond: TextCond) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """The image stream for ``x [B,C,h,w]``: tokens [B, N, 4C] and each image's (frames, rows, cols)
        (an edit family appends its source's tokens and shape after the noisy ones)."""
        h, w = x.shape[-2:]
        return pack_latents(x), [(1, h // 2, w // 2)]

    def _transformer_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: TextCond,
                              guidance: float) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens, shapes = self.image_tokens(x, cond)
        out = self.transformer_forward(
            hidden_states=tokens,
            timestep=sigma.to(x.dtype),  # the pipeline passes t / 1000 = sigma
            guidance=self.guidance_input(x, guidance),
            encoder_hidden_states=cond.tokens,
            encoder_hidden_states_mask=cond.mask,
            img_shapes=[shapes] * b)
        return unpack_latents(out[:, :self.image_seq_len(h, w)].to(x.dtype), h, w)  # the noisy tokens' velocity

    def combine_cfg(self, cond_v: torch.Tensor, uncond_v: torch.Tensor, guidance: float) -> torch.Tensor:
        """``neg + s (pos - neg)``, rescaled per packed token to the conditional prediction's norm (as the pipeline)."""
        h, w = cond_v.shape[-2:]
        pos, neg = pack_latents(cond_v), pack_latents(uncond_v)  # [B, N, 4C]
        combined = neg + guidance * (pos - neg)
        combined = combined * (pos.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True))
        return unpack_latents(combined, h, w)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.pipe.vae.config
        mean = torch.tensor(cfg.latents_mean, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
        return mean, std

    def to_vae_latents(self, x0: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(x0)
        return x0 * std + mean

    def from_vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    def _vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.decode(z[:, :, None], return_dict=False)[0][:, :, 0]  # one frame

    def _vae_encode_mode(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.encode(images[:, :, None]).latent_dist.mode()[:, :, 0]
