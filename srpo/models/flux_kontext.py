"""FLUX.1 Kontext through diffusers' ``FluxKontextPipeline``: FLUX.1 that edits a source image.

Kontext is FLUX.1's transformer trained with the source image's latents as extra image tokens:
they are packed like the noisy latent (2x2 patches), get positional ids ``(1, row, col)`` (the
noisy tokens' are ``(0, row, col)``: the first axis tells the two images apart) and are
concatenated after the noisy tokens in the transformer's image stream. The velocity is read from
the noisy tokens only. Everything else is FLUX.1 (:mod:`srpo.models.flux`): text encoders,
distilled guidance, VAE normalisation, LoRA layout.

The source reaches the policy on the encode path (see :mod:`srpo.models.base`)::

    sources = policy.encode_sources(images)          # [B,3,Hs,Ws] in [0, 1] -> latents [B,C,hs,ws]
    cond = policy.encode_prompts(instructions, sources)
    x0 = policy.rollout(cond, eps)                   # eps [B,C,h,w]: the edited image's latent

``encode_sources`` is the pipeline's own: the VAE posterior's mode, shifted and scaled like any
FLUX latent. The one difference from ``FluxKontextPipeline.__call__``: the pipeline resizes a
PIL/array source to the Kontext training resolution nearest its aspect ratio
(``PREFERRED_KONTEXT_RESOLUTIONS``, ``_auto_resize``) and picks the output size from ``max_area``;
the policy takes the source at the size it is given and the output at the size of ``eps``
(the data loader chooses both; :func:`preferred_kontext_size` gives the pipeline's choice).
Without sources the model runs as text-to-image, as the pipeline does without an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from srpo.models.flux import FluxPolicy, PromptEmbeds, latent_image_ids, pack_latents

__all__ = ["FluxKontextPolicy", "KontextCond", "source_image_ids", "preferred_kontext_size"]


@dataclass
class KontextCond(PromptEmbeds):
    """FLUX text conditioning plus each prompt's source-image latent."""

    source: Optional[torch.Tensor] = None  # [B, C, hs, ws]  source latents (our latent space); None = text-to-image

    def repeat(self, n: int) -> "KontextCond":
        """The batch ``n`` times over, sources included."""
        text = super().repeat(n)
        source = None if self.source is None else self.source.repeat(n, 1, 1, 1)
        return KontextCond(text.tokens, text.pooled, text.text_ids, source)


def source_image_ids(hs: int, ws: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Kontext's ids of the packed source tokens: [(hs/2)*(ws/2), 3] = (1, row, col)."""
    ids = latent_image_ids(hs, ws, device, dtype)
    ids[:, 0] = 1
    return ids


def preferred_kontext_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) ``FluxKontextPipeline`` resizes a ``height`` x ``width`` source to: the Kontext
    training resolution of the nearest aspect ratio (its ``_auto_resize``), in multiples of 16."""
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    _, w, h = min((abs(width / height - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    return h // 16 * 16, w // 16 * 16


class FluxKontextPolicy(FluxPolicy):
    """FLUX.1 Kontext: FLUX.1 whose image stream also holds the source image's tokens."""

    family = "flux-kontext"
    pipeline_class = "FluxKontextPipeline"
    default_guidance = 2.5  # BFL's recommended guidance for Kontext [dev] (the pipeline's default is 3.5)
    edits_images = True

    def source_pixels(self, image) -> torch.Tensor:
        """A PIL source as ``FluxKontextPipeline`` prepares it: resized to the Kontext resolution of the nearest
        aspect ratio (:func:`preferred_kontext_size`), [3, H, W] in [0, 1]."""
        return self._pipeline_pixels(image, *preferred_kontext_size(image.height, image.width))

    @torch.no_grad()
    def encode_sources(self, images: torch.Tensor) -> torch.Tensor:
        """Source images [B,3,Hs,Ws] in [0, 1] -> their latents [B,C,hs,ws] (as the pipeline encodes them)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"source images must be [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        self.latent_shape(*images.shape[-2:])  # sides in multiples of 16, else a clear error
        return self.encode_images(images)

    def attach_sources(self, cond: PromptEmbeds, sources: torch.Tensor) -> KontextCond:
        """``cond`` with one source latent [C, hs, ws] per prompt (from :meth:`encode_sources`)."""
        if sources.ndim != 4 or sources.shape[1] != self.latent_channels:
            raise ValueError(f"sources must be source latents [B, {self.latent_channels}, hs, ws] from "
                             f"encode_sources, got shape {tuple(sources.shape)}")
        if sources.shape[0] != cond.tokens.shape[0]:
            raise ValueError(f"{sources.shape[0]} source images for {cond.tokens.shape[0]} prompts: give one "
                             "source per prompt")
        return KontextCond(cond.tokens, cond.pooled, cond.text_ids, sources.to(self.device))

    def image_tokens(self, x: torch.Tensor, cond: PromptEmbeds) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy tokens [B, N, 4C] then the source's [B, Ns, 4C]; ids (0, r, c) then (1, r, c)."""
        tokens, ids = super().image_tokens(x, cond)
        source = getattr(cond, "source", None)
        if source is None:
            return tokens, ids
        if source.shape[0] != x.shape[0]:
            raise ValueError(f"a batch of {x.shape[0]} latents with {source.shape[0]} source images: repeat the "
                             "conditioning with cond.repeat(n) when the latents are stacked n times")
        hs, ws = source.shape[-2:]
        return (torch.cat([tokens, pack_latents(source.to(x.dtype))], dim=1),  # [B, N + Ns, 4C]
                torch.cat([ids, source_image_ids(hs, ws, x.device, x.dtype)]))  # [N + Ns, 3]
