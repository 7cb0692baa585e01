"""The edit reward: how well an edited image does what the instruction asks and keeps the rest of the source.

An edit is scored from (source, edited, text) by terms of the ordinary multi-reward
(:class:`~srpo.rewards.combine.MultiReward`), each a feature reward (CLIP-style: HPS v2.1, PickScore,
CLIP, the shapes world's CLIP) used one of two ways, set by the entry's ``against``:

- ``against: text`` (every reward's usual term): agreement of the edited image with the edit's
  *target text*, ``<f_img(edited), f_txt(text)>``, with every SRP form: control words go on the
  text side (``"<word>. <target text>"``) exactly as for text-to-image;
- ``against: source``: consistency with the source, the cosine of the two images' features
  ``<f_img(edited), f_img(source)>`` (the source's features without gradient). It is at most the
  reward's ``scale``, reached when the edited image is the source; it reads no text, so its form is
  ``plain``. An edit trades the two by the entries' weights: a weight too high on ``source`` keeps
  the source unchanged, too low lets the rest of the image drift;
- ``against: direction`` (directional CLIP): the change of the image's features along the change
  the texts ask for, ``<f_img(edited) - f_img(source), f_txt(text) - f_txt(source text)>``; zero for
  the source itself, it rewards moving towards the target text *away from what the source caption
  says*, not any move. Up to a constant it is SRP's relative form with the source caption as the
  negative prompt. It needs the source captions (``source_prompts=``); form ``plain``.

- ``against: structure``: the layout of the source where the instruction changes colours or tones: the
  cosine of the two images' edge maps (:func:`edge_map`: per-pixel colour-gradient magnitude at
  :data:`STRUCTURE_SIZE` px on the short side, slightly blurred). A feature reward's ``source`` term sees an
  outline only through what its features happen to encode (a tiny CLIP: barely); this term reads pixels,
  so it holds where the edges are while staying blind to what colour, brightness or saturation fills
  them (scaling an image's contrast leaves it unchanged). It reads no model (the entry's reward is
  only shared with the other terms) and suits edits that keep the layout: it fights an instruction that
  moves or reshapes something.

All are differentiable in the edited image. A config::

    rewards:
      - {name: target, reward: {name: hf_clip, checkpoint: builtin:shapes-clip}, form: weighted,
         positive_words: [vivid], negative_words: [muted]}
      - {name: keep, reward: {name: hf_clip, checkpoint: builtin:shapes-clip}, against: source,
         form: plain, weight: 0.5}

(the two entries share one loaded model). What the caller passes: ``multi(images, texts,
sources=source_images, ...)``, ``texts`` being what the reward reads (the target text where the data
gives one, e.g. the shapes world's target captions; else the instruction itself) and
``source_images`` ``[B,3,H,W]`` in ``[0, 1]``, one per edited image (repeated like the images when
they are). A score-only judge (``reward: {name: score, function: shapes-edit}``, the world's pixel
grader: done + kept) takes the same keyword: ``score(images, instructions, sources=...)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: How a multi-reward entry reads the edited image (``RewardUse.against``).
AGAINST = ("text", "source", "direction", "structure")
#: The short side (px) the structure term compares edge maps at: the outline, not the texture.
STRUCTURE_SIZE = 64


def check_sources(images: torch.Tensor, sources: torch.Tensor | None, label: str) -> torch.Tensor:
    """``sources`` when it is one ``[3, H', W']`` image per edited image; a clear error otherwise."""
    if sources is None:
        raise ValueError(f"reward term {label!r} compares the edited image with its source (against: source) but "
                         "no sources were given: pass sources=[B, 3, H, W] source images with the images")
    if sources.ndim != 4 or sources.shape[1] != 3 or sources.shape[0] != images.shape[0]:
        raise ValueError(f"reward term {label!r}: sources of shape {tuple(sources.shape)} for {images.shape[0]} "
                         "images: give one source image [3, H, W] in [0, 1] per edited image")
    return sources


def check_source_prompts(images: torch.Tensor, source_prompts, label: str) -> list[str]:
    """``source_prompts`` when it is one caption per edited image; a clear error otherwise."""
    if source_prompts is None or len(source_prompts) != images.shape[0]:
        raise ValueError(f"reward term {label!r} (against: direction) needs one source caption per edited image: "
                         f"pass source_prompts=[...] ({images.shape[0]} strings) with the images")
    return list(source_prompts)


def source_direction(reward, images: torch.Tensor, sources: torch.Tensor, prompts, source_prompts) -> torch.Tensor:
    """``scale * <f_img(images) - f_img(sources), f_txt(prompts) - f_txt(source_prompts)>`` [B], differentiable
    in ``images`` only."""
    with torch.no_grad():
        ref = reward.image_features(sources.to(images.device))  # [B, D]
        delta = reward.text_features(list(prompts)) - reward.text_features(source_prompts)  # [B, D]
    img = reward.image_features(images)  # [B, D]
    return reward.scale * ((img - ref.to(img.dtype)) * delta.to(img.dtype)).sum(-1)


def source_similarity(reward, images: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """``scale * <f_img(images), f_img(sources)>`` [B]: differentiable in ``images`` [B,3,H,W], not in ``sources``."""
    with torch.no_grad():
        ref = reward.image_features(sources.to(images.device))  # [B, D]
    img = reward.image_features(images)  # [B, D]
    return reward.scale * (img * ref.to(img.dtype)).sum(-1)


def edge_map(images: torch.Tensor, size: int = STRUCTURE_SIZE, eps: float = 1e-4) -> torch.Tensor:
    """Unit-norm edge maps [B, h*w] of ``images`` [B,3,H,W] in [0, 1]: the colour-gradient magnitude per pixel
    (all channels), after an area resize to ``size`` px on the short side (never up), blurred over 3x3 so an
    edge one pixel off still overlaps. ``sqrt(g^2 + eps) - sqrt(eps)`` keeps the gradient finite on flat areas."""
    _, _, h, w = images.shape
    short = min(h, w)
    if short > size:
        images = F.interpolate(images, size=(round(h * size / short), round(w * size / short)), mode="area")
    gx = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1))  # [B, 3, h, w]
    gy = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))  # [B, 3, h, w]
    energy = (gx.square() + gy.square()).sum(1, keepdim=True)  # [B, 1, h, w]
    edges = (energy + eps).sqrt() - eps ** 0.5
    edges = F.avg_pool2d(edges, 3, stride=1, padding=1, count_include_pad=False)  # [B, 1, h, w]
    return F.normalize(edges.flatten(1), dim=1, eps=1e-8)


def source_structure(images: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """``<edge_map(images), edge_map(sources)>`` [B] in [0, 1]: 1 where the edges sit where the source's do, whatever
    colours fill them. Differentiable in ``images`` [B,3,H,W]; ``sources`` [B,3,H',W'] are resized to H x W."""
    with torch.no_grad():
        src = sources.to(device=images.device, dtype=images.dtype)
        if src.shape[-2:] != images.shape[-2:]:
            src = F.interpolate(src, size=images.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        ref = edge_map(src)  # [B, h*w]
    return (edge_map(images) * ref).sum(-1)
