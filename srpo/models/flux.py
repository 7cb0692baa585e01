"""FLUX.1 through diffusers: the FLUX family's adapter of the policy interface (:mod:`srpo.models.base`).

The adapter hides FLUX's packing (2x2 latent patches become tokens), its text encoders (CLIP
pooled + T5 sequence) and its distilled guidance. Everything else in the library sees plain
latents ``x [B, C, h, w]`` and noise levels ``sigma [B]`` with ``v`` targeting ``eps - x0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from srpo.models.base import JOINT_ATTENTION_TARGETS, Policy

__all__ = ["FluxPolicy", "PromptEmbeds", "LORA_TARGETS", "pack_latents", "unpack_latents", "latent_image_ids"]

#: Attention and MLP projections of FLUX's double- and single-stream blocks.
LORA_TARGETS = (
    *JOINT_ATTENTION_TARGETS,                             # image- and text-stream attention
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",  # double-block MLPs
    "proj_mlp", "proj_out",                               # single-block MLP in / fused out
)


@dataclass
class PromptEmbeds:
    """FLUX text conditioning for a batch."""

    tokens: torch.Tensor  # [B, L, D_t5]   T5 sequence
    pooled: torch.Tensor  # [B, D_clip]    CLIP pooled output
    text_ids: torch.Tensor  # [L, 3]       positional ids of the text tokens (zeros)

    def repeat(self, n: int) -> "PromptEmbeds":
        """The batch ``n`` times over, [n*B, ...] (for a model call on n stacked batches)."""
        return PromptEmbeds(self.tokens.repeat(n, 1, 1), self.pooled.repeat(n, 1), self.text_ids)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)*(w/2), 4C]: 2x2 patches become tokens."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, 2, 2]
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, (h/2)*(w/2), 4C] -> [B, C, h, w] (inverse of :func:`pack_latents`)."""
    b, _, c4 = tokens.shape
    x = tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C, h/2, 2, w/2, 2]
    return x.reshape(b, c4 // 4, h, w)


def latent_image_ids(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """FLUX's positional ids for the packed latent tokens: [(h/2)*(w/2), 3] = (0, row, col)."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)  # built in place: no host-to-device copy
    ids[..., 1] = torch.arange(h // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)


class FluxPolicy(Policy):
    """A FLUX.1 pipeline seen as a velocity field over unpacked latents (see :mod:`srpo.models.base`).

    FLUX packs 2x2 latent patches into tokens, conditions on CLIP pooled + T5 states and takes a
    distilled guidance value as an input.
    """

    family = "flux"
    pipeline_class = "FluxPipeline"
    guidance_kind = "distilled"
    lora_targets = LORA_TARGETS
    default_guidance = 3.5

    # ---- geometry -------------------------------------------------------------------------
    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return pack_latents(x)

    def unpack(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return unpack_latents(tokens, h, w)

    # ---- text -----------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str], sources=None) -> PromptEmbeds:
        """T5 states and CLIP pooled vectors of ``prompts``, cached per prompt (FLUX.1's T5 states
        are 4 MB a prompt in bf16: the cache is bounded by ``max_cached_prompts``)."""
        cond = super().encode_prompts(prompts)
        text_ids = torch.zeros(cond.tokens.shape[1], 3, device=self.device, dtype=cond.tokens.dtype)
        embeds = PromptEmbeds(cond.tokens, cond.pooled, text_ids)
        return embeds if sources is None else self.attach_sources(embeds, sources)

    def _encode_missing(self, prompts: list[str]) -> list[tuple]:
        max_len = min(512, self.pipe.tokenizer_2.model_max_length)
        tokens, pooled, _ = self.pipe.encode_prompt(prompts, device=self.device, max_sequence_length=max_len)
        return list(zip(tokens, pooled))  # ([L, D_t5], [D_clip]) per prompt

    # ---- the velocity field ---------------------------------------------------------------
    def image_tokens(self, x: torch.Tensor, cond: PromptEmbeds) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's image stream for ``x [B,C,h,w]``: tokens [B, N, 4C] and their ids [N, 3]
        (an edit family appends its source tokens after the N noisy ones)."""
        h, w = x.shape[-2:]
        return pack_latents(x), latent_image_ids(h, w, x.device, x.dtype)

    def _transformer_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: PromptEmbeds,
                              guidance: float) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens, img_ids = self.image_tokens(x, cond)
        out = self.transformer_forward(
            hidden_states=tokens,
            timestep=sigma.to(x.dtype),  # diffusers' FLUX multiplies by 1000 inside
            guidance=self.guidance_input(x, guidance),
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.tokens,
            txt_ids=cond.text_ids,
            img_ids=img_ids)
        return unpack_latents(out[:, :self.image_seq_len(h, w)].to(x.dtype), h, w)  # the noisy tokens' velocity
