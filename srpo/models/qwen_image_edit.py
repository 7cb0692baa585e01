"""Qwen-Image-Edit through diffusers' ``QwenImageEditPipeline``: Qwen-Image that edits a source image.

Two paths see the source. The transformer gets its latents as extra image tokens, packed 2x2 like
the noisy latent and appended after the noisy tokens, with their own entry in ``img_shapes``
(the rotary position code tells the two images apart); the velocity is read from the noisy
tokens only. The text encoder (Qwen2.5-VL) reads the source with the instruction, so the text
rows depend on the image: they are cached per (instruction, source) pair, and true CFG's negative
prompt is encoded with the same source, as the pipeline does. Everything else is Qwen-Image
(:mod:`srpo.models.qwen_image`).

Interface (see :mod:`srpo.models.base`)::

    sources = policy.encode_sources(images)          # [B,3,Hs,Ws] in [0, 1] -> EditSources
    cond = policy.encode_prompts(instructions, sources)

Qwen-Image-Edit-2509 (``QwenImageEditPlusPipeline``, :class:`QwenImageEditPlusPolicy`) reads up to
three sources per prompt: each adds its tokens and ``img_shapes`` entry, and the text encoder reads
each resized to 384^2 pixels after a "Picture i:" tag.

The pipeline resizes every source to an area of 1024^2 pixels at its aspect ratio (sides in
multiples of 32) before both paths; the policy takes the source at the size it is given
(:func:`preferred_edit_size` gives the pipeline's choice). Both paths see the source as 8-bit RGB
(the pipeline is handed PIL images), so sources are rounded to 1/255 steps first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from srpo.models.base import TextCond, pack_text_rows, stack_rows, unpack_text_rows
from srpo.models.flux import pack_latents
from srpo.models.qwen_image import QwenImagePolicy

__all__ = ["QwenImageEditPolicy", "QwenImageEditPlusPolicy", "EditSources", "QwenEditCond", "preferred_edit_size"]


@dataclass
class EditSources:
    """What Qwen-Image-Edit conditions on from a batch of source images, one or more per prompt (slots)."""

    latents: list[torch.Tensor]  # per slot [B, C, hs, ws]: source latents (our latent space) for the transformer
    pixels: Optional[list[torch.Tensor]]  # per slot [B, 3, Hc, Wc] uint8, as the text encoder reads them; None: rows stored
    keys: list[str]  # per prompt, a digest of its sources: the prompt cache's key with the instruction

    def __len__(self) -> int:
        return len(self.keys)

    def repeat(self, n: int) -> "EditSources":
        rows = lambda ts: [t.repeat(n, 1, 1, 1) for t in ts]  # noqa: E731
        return EditSources(rows(self.latents), None if self.pixels is None else rows(self.pixels), self.keys * n)

    def to(self, device) -> "EditSources":
        return replace(self, latents=[t.to(device) for t in self.latents])


@dataclass
class QwenEditCond(TextCond):
    """Text rows read with the source, plus the source itself."""

    sources: Optional[EditSources] = None

    def repeat(self, n: int) -> "QwenEditCond":
        text = TextCond(self.tokens, self.mask, self.pooled).repeat(n)
        return QwenEditCond(text.tokens, text.mask, text.pooled, None if self.sources is None else self.sources.repeat(n))


def _digest(images: list[torch.Tensor]) -> str:
    """A content digest of one prompt's uint8 sources (shapes and bytes)."""
    return hashlib.sha256(b"".join(repr(tuple(p.shape)).encode() + p.numpy().tobytes() for p in images)).hexdigest()[:32]


def preferred_edit_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) ``QwenImageEditPipeline`` resizes a ``height`` x ``width`` source to (1024^2 pixels)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    w, h, _ = calculate_dimensions(1024 * 1024, width / height)
    return h, w


class QwenImageEditPolicy(QwenImagePolicy):
    """Qwen-Image-Edit: the source's tokens in the image stream and the source in the text encoder."""

    family = "qwen-image-edit"
    pipeline_class = "QwenImageEditPipeline"
    edits_images = True

    max_sources: int = 1  # source images per prompt

    def source_pixels(self, image) -> torch.Tensor:
        """A PIL source as the pipeline prepares it for its VAE: resized to 1024^2 pixels at its aspect ratio
        (:func:`preferred_edit_size`), [3, H, W] in [0, 1]."""
        return self._pipeline_pixels(image, *preferred_edit_size(image.height, image.width))

    @torch.no_grad()
    def encode_sources(self, images: torch.Tensor | Sequence[torch.Tensor]) -> EditSources:
        """Source images [B,3,Hs,Ws] in [0, 1] (Edit-Plus: a list, one tensor per source slot) -> their latents
        (as the pipeline encodes them), the 8-bit pixels the text encoder reads, and a digest per prompt."""
        slots = [images] if isinstance(images, torch.Tensor) else list(images)
        if not 1 <= len(slots) <= self.max_sources:
            raise ValueError(f"{len(slots)} source slots for {self.family}, which reads 1 to {self.max_sources}")
        latents, pixels = [], []
        for slot in slots:
            if slot.ndim != 4 or slot.shape[1] != 3 or slot.shape[0] != slots[0].shape[0]:
                raise ValueError(f"source images must be [B, 3, H, W] in [0, 1] (the same B in every slot), got "
                                 f"shape {tuple(slot.shape)}")
            self.latent_shape(*slot.shape[-2:])  # sides in multiples of 16, else a clear error
            eight_bit = (slot.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # [B, 3, Hs, Ws]
            latents.append(self.encode_images(eight_bit.float().div(255).to(self.device)))
            pixels.append(self.text_encoder_pixels(eight_bit))
        return EditSources(latents, pixels, [_digest([p[i] for p in pixels]) for i in range(slots[0].shape[0])])

    def text_encoder_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The uint8 sources [B,3,H,W] as the text encoder reads them (Edit: as given; Edit-Plus resizes)."""
        return pixels

    def _read_rows(self, texts: list[str], images: list[list]) -> list[tuple]:
        """Qwen2.5-VL's rows of ``texts``, each read with its PIL ``images`` (one per slot)."""
        embeds, mask = self.pipe.encode_prompt(texts, image=[row[0] for row in images], device=self.device)
        if mask is None:
            return [(e, None) for e in embeds]
        return [(e[m.bool()], None) for e, m in zip(embeds, mask)]  # each pair at its own length

    def _checked(self, prompts: Sequence[str], sources) -> EditSources:
        if sources is None:
            raise ValueError(f"policy.family {self.family!r} edits a source image: pass one per prompt, "
                             "encode_prompts(prompts, policy.encode_sources(images))")
        if not isinstance(sources, EditSources):
            raise ValueError(f"sources must be the EditSources of encode_sources, got {type(sources).__name__}")
        if len(sources) != len(prompts):
            raise ValueError(f"{len(sources)} source images for {len(prompts)} prompts: give one source per prompt")
        return sources

    @staticmethod
    def pair_keys(prompts: Sequence[str], sources: EditSources) -> list[str]:
        """The prompt cache's keys: the instruction and its source's digest."""
        return [f"{p}\x00{k}" for p, k in zip(prompts, sources.keys)]

    def _pair_rows(self, prompts: Sequence[str], sources: EditSources) -> list[tuple]:
        """One ``(tokens [L_i, D], None)`` row per (prompt, source), the missing pairs read together."""
        where = dict(zip(self.pair_keys(prompts, sources), zip(prompts, range(len(prompts)))))

        def encode(missing: list[str]) -> list[tuple]:
            from PIL import Image

            if not self.text_encoders or sources.pixels is None:
                raise RuntimeError(f"instruction {where[missing[0]][0]!r} has no stored text rows for its source "
                                   "and cannot be read here: store them with the rollout set "
                                   "(stored_conditioning(prompts, sources)) or load the policy with text_encoders=True")
            texts = [where[m][0] for m in missing]
            images = [[Image.fromarray(slot[where[m][1]].permute(1, 2, 0).numpy()) for slot in sources.pixels]
                      for m in missing]
            return self._read_rows(texts, images)

        return self.prompt_cache.lookup(self.pair_keys(prompts, sources), encode)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], sources: EditSources | None = None) -> QwenEditCond:
        """Text rows of each (instruction, source) pair, read together by Qwen2.5-VL and cached per pair."""
        sources = self._checked(prompts, sources)
        text = stack_rows(self._pair_rows(prompts, sources), self.text_with_mask)
        return QwenEditCond(text.tokens, text.mask, text.pooled, sources.to(self.device))

    def attach_sources(self, cond, sources):
        raise ValueError("Qwen-Image-Edit reads the instruction and the source together: call "
                         "encode_prompts(prompts, sources)")

    # ---- stored conditioning: the text rows depend on the source --------------------------
    @torch.no_grad()
    def stored_conditioning(self, prompts: Sequence[str], sources: EditSources | None = None) -> dict[str, torch.Tensor]:
        """The rows of each (prompt, source) pair (and, for true CFG, the negative prompt's with each source)
        to store with a rollout set; the set keeps ``sources`` (at least their latents and keys) beside them."""
        sources = self._checked(prompts, sources)
        out = pack_text_rows(self._pair_rows(prompts, sources))
        if self.guidance_kind == "cfg":
            negative = pack_text_rows(self._pair_rows([self.negative_prompt] * len(prompts), sources))
            out.update({f"negative.{k}": v for k, v in negative.items()})
        return out

    def use_stored_conditioning(self, prompts: Sequence[str], stored: dict[str, torch.Tensor] | None,
                                sources: EditSources | None = None) -> None:
        """Put ``stored`` rows (from :meth:`stored_conditioning` on the same pairs) into the prompt cache, so that
        :meth:`encode_prompts` finds them without the text encoders (``sources.pixels`` may then be None)."""
        if not stored:
            return
        sources = self._checked(prompts, sources)
        rows = dict(zip(self.pair_keys(prompts, sources), unpack_text_rows(stored)))
        if "negative.tokens" in stored:
            negative = unpack_text_rows({k.removeprefix("negative."): v for k, v in stored.items()
                                         if k.startswith("negative.")})
            rows.update(zip(self.pair_keys([self.negative_prompt] * len(prompts), sources), negative))
        self.prompt_cache.lookup(list(rows), lambda missing: [rows[k] for k in missing])

    def negative_for(self, cond: QwenEditCond) -> QwenEditCond:
        """The negative prompt read with each row's own source (as the pipeline encodes it)."""
        return self.encode_prompts([self.negative_prompt] * len(cond.sources), cond.sources)

    def image_tokens(self, x: torch.Tensor, cond: QwenEditCond) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Noisy tokens [B, N, 4C] then each source slot's [B, Ns, 4C]; one img_shapes entry each."""
        tokens, shapes = super().image_tokens(x, cond)
        for source in cond.sources.latents:
            if source.shape[0] != x.shape[0]:
                raise ValueError(f"a batch of {x.shape[0]} latents with {source.shape[0]} source images: repeat the "
                                 "conditioning with cond.repeat(n) when the latents are stacked n times")
            hs, ws = source.shape[-2:]
            tokens = torch.cat([tokens, pack_latents(source.to(x.dtype))], dim=1)
            shapes = [*shapes, (1, hs // 2, ws // 2)]
        return tokens, shapes


class QwenImageEditPlusPolicy(QwenImageEditPolicy):
    """Qwen-Image-Edit-2509 (``QwenImageEditPlusPipeline``): up to three sources per prompt, each read by the
    text encoder at an area of 384^2 pixels ("Picture i: ..." before the instruction) and by the
    transformer at the size given (the pipeline's: 1024^2 pixels)."""

    family = "qwen-image-edit-plus"
    pipeline_class = "QwenImageEditPlusPipeline"
    max_sources = 3

    def text_encoder_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Each source resized (the pipeline's PIL resize) to the text encoder's area, 384^2 pixels."""
        import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus
        import numpy as np
        from PIL import Image

        h, w = pixels.shape[-2:]
        cw, ch = plus.calculate_dimensions(plus.CONDITION_IMAGE_SIZE, w / h)
        resized = [self.pipe.image_processor.resize(Image.fromarray(p.permute(1, 2, 0).numpy()), ch, cw)
                   for p in pixels]
        return torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in resized])  # [B, 3, Hc, Wc]

    def _read_rows(self, texts: list[str], images: list[list]) -> list[tuple]:
        """One call per row: the pipeline numbers the pictures of a call, so rows cannot share one."""
        rows = []
        for text, row in zip(texts, images):
            embeds, mask = self.pipe.encode_prompt([text], image=row, device=self.device)
            rows.append((embeds[0] if mask is None else embeds[0][mask[0].bool()], None))
        return rows
