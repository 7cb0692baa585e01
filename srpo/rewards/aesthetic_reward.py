"""Aesthetic predictor v2.5 (the model; a training reward and, in
:mod:`srpo.evaluation.metrics.aesthetic`, a metric): a SigLIP vision tower and a small MLP head, loaded by our own code.

Architecture (read off the published weights' layout; the upstream package is AGPL, so nothing
of it is used here): the SigLIP ``so400m-patch14-384`` vision tower's pooled output (the
attention-pooling head's output, 1152-d) is L2-normalised and fed to an MLP
``Linear(D, 1024) -> Dropout -> Linear(1024, 128) -> Dropout -> Linear(128, 64) -> Dropout ->
Linear(64, 16) -> Dropout -> Linear(16, 1)`` with no activations. The head's weight file
(``aesthetic_predictor_v2_5.pth``) is a plain state dict with keys ``scoring_head.{0,2,4,6,8}.
{weight,bias}``. Scores are about 1-10 (5.5+ is "great"; FLUX.1-dev: ~5.9 on HPDv2).

Preprocessing is SigLIP's: the whole image resized (not cropped) to the tower's input size
(384), bicubic, values in ``[0, 1]`` normalised with mean = std = 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from srpo.io import build_once, cache_dir, resolve_local, resolve_model_location
from srpo.published import is_builtin, resolve_builtin
from srpo.rewards.base import FrozenReward

#: The vision tower the v2.5 head was trained on (a hub id; a local folder or s3:// URL works too).
DEFAULT_ENCODER = "google/siglip-so400m-patch14-384"
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
HEAD_DROPOUT = (0.5, 0.5, 0.5, 0.2)
HEAD_FILE = "aesthetic_predictor_v2_5.pth"
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


class AestheticHead(torch.nn.Module):
    """The v2.5 MLP; parameter names match the published state dict (``scoring_head.N.*``)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        width = in_features
        for i, out in enumerate(HEAD_WIDTHS):
            layers.append(torch.nn.Linear(width, out))
            if i < len(HEAD_DROPOUT):
                layers.append(torch.nn.Dropout(HEAD_DROPOUT[i]))
            width = out
        self.scoring_head = torch.nn.Sequential(*layers)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.scoring_head(embeds)  # [B, D] -> [B, 1]


class AestheticPredictor(torch.nn.Module):
    """SigLIP vision tower + :class:`AestheticHead`; ``forward(pixels) -> [B]`` scores."""

    def __init__(self, vision: torch.nn.Module, head: AestheticHead) -> None:
        super().__init__()
        self.vision, self.head = vision, head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.vision(pixel_values=pixels).pooler_output  # [B, D]
        return self.head(F.normalize(pooled, dim=-1)).squeeze(-1)  # [B]


def siglip_preprocess(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``[B, 3, H, W]`` in ``[0, 1]`` -> SigLIP input ``[B, 3, S, S]`` (bicubic resize, no crop), differentiable."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    images = images.clamp(0, 1)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def load_aesthetic_predictor(checkpoint: str | None, encoder: str | None, seed: int = 0, *, what: str = "reward"):
    """``(predictor, image_size, mean, std)`` from the head file ``checkpoint`` and the SigLIP ``encoder``
    (``builtin:tiny``: a seeded tiny random predictor). ``what`` names the caller in errors."""
    if is_builtin(checkpoint):
        folder = resolve_builtin(what, checkpoint, family="aesthetic_v2.5", seed=seed)
        encoder, head_path = str(folder / "encoder"), folder / HEAD_FILE
    else:
        if checkpoint is None:
            raise ValueError(f"{what} 'aesthetic_v2.5' needs the head's weights: give `checkpoint` as the path, "
                             f"s3:// or https:// URL of {HEAD_FILE} (models/ in the discus0434/"
                             "aesthetic-predictor-v2-5 repository), or 'builtin:tiny' for a tiny random model")
        encoder, head_path = encoder or DEFAULT_ENCODER, resolve_local(checkpoint)
    vision = load_siglip_vision(encoder)
    head = AestheticHead(vision.config.hidden_size)
    load_head_state(head, head_path)
    mean, std = _pixel_stats(encoder)
    return AestheticPredictor(vision, head), vision.config.image_size, mean, std


class AestheticReward(FrozenReward):
    """Aesthetic v2.5 as a training reward: image only, ``score_images(images) -> [B]``, differentiable.

    It has no text input, so the SRP forms cannot apply; train it through the image-only relative
    form (:func:`srpo.rewards.image_only.image_only_relative_reward`). Frozen and in eval mode.
    """

    is_image_only = True

    def __init__(self, model: AestheticPredictor, *, image_size: int, mean: Sequence[float] = SIGLIP_MEAN,
                 std: Sequence[float] = SIGLIP_STD, scale: float = 1.0) -> None:
        super().__init__()
        self.backbone = model
        self.image_size, self.mean, self.std, self.scale = int(image_size), tuple(mean), tuple(std), float(scale)
        self.freeze()

    def score_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B]`` scores (about 1-10 for the published head) times ``scale``."""
        x = siglip_preprocess(images.to(device=self.device, dtype=self.dtype), self.image_size, self.mean, self.std)
        return self.scale * self.backbone(x)  # [B]

    def score(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        """Same as :meth:`score_images`; ``prompts`` is ignored (the predictor reads no text)."""
        return self.score_images(images)


def load_aesthetic_reward(config) -> AestheticReward:
    """The ``aesthetic_v2.5`` training reward of a :class:`~srpo.rewards.config.RewardConfig`
    (``checkpoint``: the head file; ``processor_path``: the SigLIP encoder, default the hub's so400m)."""
    model, size, mean, std = load_aesthetic_predictor(config.checkpoint, config.processor_path, config.seed)
    return AestheticReward(model, image_size=size, mean=mean, std=std, scale=1.0 if config.scale is None else config.scale)


def load_siglip_vision(location: str):
    """``SiglipVisionModel.from_pretrained`` from a folder, s3:// URL or hub id (a full SigLIP works)."""
    from transformers import SiglipVisionModel

    source = resolve_model_location(location)
    try:
        return SiglipVisionModel.from_pretrained(source).eval()
    except (OSError, ValueError) as err:
        raise OSError(f"could not load a SigLIP vision model from {location!r}: {err}\nGive `encoder` as a folder "
                      f"written by SiglipModel/SiglipVisionModel.save_pretrained, or a hub id ({DEFAULT_ENCODER})") from err


def load_head_state(head: AestheticHead, path: Path) -> None:
    """Load the v2.5 head's state dict (``.pth``/``.pt`` read with ``weights_only``, or safetensors)."""
    from srpo.rewards.open_clip_reward import read_state_dict

    state = read_state_dict(Path(path))
    if state and all(k.startswith("layers.") for k in state):  # saved from the whole predictor
        state = {k[len("layers."):]: v for k, v in state.items()}
    expected = head.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path} is not an aesthetic predictor v2.5 head for this encoder (hidden size "
                         f"{head.scoring_head[0].in_features}): missing {missing[:4]}, unexpected {unexpected[:4]}, "
                         f"shape mismatches {shapes[:4]}. The head file holds scoring_head.{{0,2,4,6,8}}.weight/bias; "
                         "check that `encoder` is the SigLIP model it was trained on")
    head.load_state_dict(state, strict=True)


def _pixel_stats(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    path = Path(encoder) / "preprocessor_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        return tuple(cfg.get("image_mean", SIGLIP_MEAN)), tuple(cfg.get("image_std", SIGLIP_STD))
    return SIGLIP_MEAN, SIGLIP_STD


# -- builtin:tiny ----------------------------------------------------------------------------

def tiny_siglip_config():
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)


def save_aesthetic_checkpoint(folder: Path, vision, head: AestheticHead) -> None:
    """Write ``encoder/`` (SigLIP, save_pretrained) and the head file in the published layout."""
    from transformers import SiglipImageProcessor

    vision.save_pretrained(folder / "encoder")
    size = vision.config.image_size
    SiglipImageProcessor(size={"height": size, "width": size}, image_mean=list(SIGLIP_MEAN),
                         image_std=list(SIGLIP_STD)).save_pretrained(folder / "encoder")
    torch.save({k: v.contiguous() for k, v in head.state_dict().items()}, folder / HEAD_FILE)


def build_tiny_aesthetic(seed: int = 0, name: str = "aesthetic_v2.5") -> Path:
    """``cache_dir()/builtin/aesthetic-v2.5-tiny-<seed>/``: a seeded random tiny predictor (made once).
    ``name``: the registry's one builder signature (unused)."""
    from transformers import SiglipVisionModel

    def build(folder: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vision = SiglipVisionModel(tiny_siglip_config())
            head = AestheticHead(vision.config.hidden_size)
        save_aesthetic_checkpoint(folder, vision, head)

    return build_once(cache_dir() / "builtin" / f"aesthetic-v2.5-tiny-{seed}", build)
