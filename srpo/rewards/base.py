"""The reward protocol: one small interface that every CLIP-like reward model follows.

A reward model scores images against prompts, ``r(x, p) = scale * <f_img(x), f_txt(p)>``,
with L2-normalised features. SRPO needs the two towers separately (Semantic Relative
Preference combines several text features with one image feature), so the protocol is:

- ``image_features(images)``: ``[B, 3, H, W]`` floats in ``[0, 1]`` -> ``[B, D]`` normalised.
  Preprocessing (resize, crop, normalise) happens inside the graph, so the result is
  differentiable with respect to the images: gradients flow back into the VAE decoder and the
  policy.
- ``text_features(prompts)``: ``B`` strings -> ``[B, D]`` normalised, computed without
  gradients and cached by prompt string (the text side is never trained, and the same prompts
  with the same control words recur every step).
- ``score(images, prompts)``: ``[B]`` = ``scale * (image_features * text_features).sum(-1)``.
- ``image_size``, ``scale`` (and ``mean``/``std`` of the pixel normalisation) as attributes.

The model is frozen: its parameters never require gradients and it stays in eval mode even if a
caller's ``.train()`` reaches it. Adapters (open_clip, transformers) subclass
:class:`RewardModel` and implement only ``encode_pixels`` and ``encode_prompts``.
"""

from __future__ import annotations

import abc
from typing import Sequence

import torch
import torch.nn.functional as F

from srpo.cache import PromptCache

#: OpenAI CLIP's pixel normalisation (also used by HPS v2.1, PickScore and laion CLIP-H).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224


def preprocess_for_clip(images: torch.Tensor, size: int,
                        mean: Sequence[float] = CLIP_MEAN,
                        std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Differentiable CLIP preprocessing: bicubic resize, centre crop, normalise.

    ``images``: ``[B, 3, H, W]`` floats in ``[0, 1]``. The shorter side is resized to ``size``
    (bicubic, ``align_corners=False``, antialiased like PIL and like torchvision's ``Resize`` on
    tensors, which the SRPO authors' reward classes call; still differentiable, and every input
    pixel gets a gradient), the centre ``size x size`` is cropped, values are clamped
    back to ``[0, 1]`` (bicubic overshoots at edges; PIL clips the same way) and normalised with
    ``mean``/``std``. Returns ``[B, 3, size, size]``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    _, _, h, w = images.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic",
                               align_corners=False, antialias=True)  # [B, 3, new_h, new_w]
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    images = images[:, :, top:top + size, left:left + size]  # [B, 3, size, size]
    images = images.clamp(0.0, 1.0)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t  # [B, 3, size, size]


class FrozenReward(torch.nn.Module):
    """The base of every reward model: ``device`` and ``dtype`` of its parameters, and eval mode
    kept (no dropout, fixed norms) whatever ``.train()`` a caller asks for. Subclasses call
    :meth:`freeze` at the end of ``__init__``."""

    def freeze(self) -> None:
        """No parameter requires grad; eval mode."""
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def train(self, mode: bool = True) -> "FrozenReward":
        """Reward models stay in eval mode whatever the caller asks."""
        return super().train(False)


class RewardModel(FrozenReward, abc.ABC):
    """A frozen CLIP-like reward model (see the module docstring for the protocol).

    Subclasses pass their backbone to ``__init__`` (it becomes ``self.backbone``) and implement
    :meth:`encode_pixels` and :meth:`encode_prompts`; normalisation, caching, preprocessing and
    freezing live here.
    """

    #: How many prompts' text features :meth:`text_features` keeps (least recently used dropped first).
    max_cached_prompts: int = 4096

    def __init__(self, backbone: torch.nn.Module, *, image_size: int, scale: float,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = int(image_size)
        self.scale = float(scale)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._text_cache = PromptCache(self.max_cached_prompts)  # prompt -> [D] normalised features
        self.freeze()

    # -- what adapters implement ------------------------------------------------------------

    @abc.abstractmethod
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed ``[B, 3, S, S]`` pixels -> ``[B, D]`` image embeddings (not normalised)."""

    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """``B`` prompts -> ``[B, D]`` text embeddings (not normalised)."""

    # -- the protocol -----------------------------------------------------------------------

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B, D]`` L2-normalised, differentiable in ``images``."""
        pixels = preprocess_for_clip(images.to(device=self.device, dtype=self.dtype),
                                     self.image_size, self.mean, self.std)  # [B, 3, S, S]
        return F.normalize(self.encode_pixels(pixels), dim=-1)  # [B, D]

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """``B`` prompts -> ``[B, D]`` L2-normalised, without gradients, cached per prompt."""
        if isinstance(prompts, str):
            raise TypeError("text_features takes a sequence of prompts, not one string: wrap it in a list")
        self._text_cache.max_items = self.max_cached_prompts  # a class or instance setting, read at each call
        return torch.stack(self._text_cache.lookup(prompts, self._encode_normalised))  # [B, D]

    @torch.no_grad()
    def _encode_normalised(self, prompts: list[str]) -> torch.Tensor:
        return F.normalize(self.encode_prompts(prompts), dim=-1)  # [M, D]

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``scale * cos(image, prompt)`` per pair: ``[B, 3, H, W]`` and ``B`` prompts -> ``[B]``."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts: give one prompt per image")
        img = self.image_features(images)  # [B, D]
        txt = self.text_features(prompts)  # [B, D]
        return self.scale * (img * txt).sum(-1)  # [B]

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.score(images, prompts)

    # -- staying frozen ---------------------------------------------------------------------

    def _apply(self, fn, recurse: bool = True):  # .to(), .cuda(), .half() ...
        self._text_cache.clear()  # cached features would have the old device/dtype
        return super()._apply(fn, recurse)

