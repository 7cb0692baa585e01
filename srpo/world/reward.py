"""A small CLIP reward trained contrastively on the shapes world's captions.

The model is a transformers ``CLIPModel`` (ViT image tower, CLIP text tower, OpenAI CLIP's BPE
tokenizer built offline), saved with ``save_pretrained`` next to its tokenizer and image
processor, so the library's ``hf_clip`` reward adapter loads it like any other CLIP folder:
``RewardConfig(name="hf_clip", checkpoint=<folder>)``.

Training, per step (batch of world images with random attribute prefixes on their captions):

- symmetric InfoNCE between images and captions, with *hard negatives* on the text side: each
  image's caption with one attribute swapped (its brightness or saturation word flipped, or a
  wrong colour or shape);
- a pairwise ranking term for control words: ``"<true word>. <prompt>"`` must score above
  ``"<opposite>. <prompt>"`` (what SRP relies on);
- optionally a *planted bias* (for the hacking benchmark): for captions that do not mention
  saturation, the vivid rendering of a scene must score above its muted rendering. A reward
  trained this way "likes saturation" whatever the prompt says, as HPS-like rewards like
  over-saturated, over-detailed images.

Images are augmented (8x8 block means, as the world's fixed VAE decodes them, or a random blur)
so that the reward reads generated images as well as drawn ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from srpo.config import StrictModel
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, preprocess_for_clip
from srpo.rewards.hf_clip_reward import projected_embeddings
from srpo.world.fitting import Fitter
from srpo.world.shapes import (BINARY_ATTRIBUTES, COLOUR_NAMES, SHAPES, Scenes, WorldSpec, base_prompt, render,
                               sample_scenes)


class RewardTrainConfig(StrictModel):
    """Size and training of the world's CLIP reward."""

    image_size: int = Field(32, ge=16, description="the image tower's input side (images are resized to it)")
    patch_size: int = 4
    width: int = 64
    layers: int = 2
    heads: int = 2
    projection_dim: int = 64
    steps: int = Field(600, ge=1)
    batch_size: int = Field(64, ge=2)
    learning_rate: float = Field(2e-3, gt=0)
    pool_size: int = Field(8192, ge=64, description="world images drawn once and sampled from")
    rank_weight: float = Field(1.0, ge=0, description="weight of the control-word ranking term")
    bias: Optional[Literal["saturation"]] = Field(None, description="plant a preference for vivid images")
    bias_weight: float = Field(1.0, ge=0)
    blur_prob: float = Field(0.25, ge=0, le=1)
    block_prob: float = Field(0.5, ge=0, le=1, description="share shown as the fixed VAE decodes them (8x8 blocks)")
    seed: int = 0


def clip_config(cfg: RewardTrainConfig):
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=cfg.width, intermediate_size=2 * cfg.width,
                num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=77)
    vision = dict(image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.width,
                  intermediate_size=2 * cfg.width, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)


class _Towers:
    """Differentiable image and text features of a CLIPModel under training."""

    def __init__(self, model, tokenizer, image_size: int):
        self.model, self.tokenizer, self.image_size = model, tokenizer, image_size

    def images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = preprocess_for_clip(images, self.image_size, CLIP_MEAN, CLIP_STD)
        return F.normalize(projected_embeddings(self.model.get_image_features(pixel_values=pixels)), dim=-1)

    def texts(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.normalize(projected_embeddings(out), dim=-1)


def blur(images: torch.Tensor, generator: torch.Generator, prob: float) -> torch.Tensor:
    """Gaussian blur (sigma 0.5..1.5 px) on a random ``prob`` share of ``images`` [N,3,H,W]."""
    n = images.shape[0]
    pick = torch.rand(n, generator=generator) < prob
    if not pick.any():
        return images
    sigma = 0.5 + torch.rand((), generator=generator).item()
    x = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    out = images[pick]
    out = F.conv2d(F.pad(out, (3, 3, 0, 0), mode="replicate"), k, groups=3)
    out = F.conv2d(F.pad(out, (0, 0, 3, 3), mode="replicate"), k.transpose(2, 3), groups=3)
    images = images.clone()
    images[pick] = out
    return images


def blocks(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """What the world's fixed VAE makes of ``images``: ``size`` x ``size`` block means, copied back."""
    return F.interpolate(F.avg_pool2d(images, size), scale_factor=size, mode="nearest")


def augment(images: torch.Tensor, generator: torch.Generator, blur_prob: float, block_prob: float) -> torch.Tensor:
    """Each image: as the VAE decodes it (``block_prob``), blurred (``blur_prob``) or as drawn."""
    u = torch.rand(images.shape[0], generator=generator)
    out = blur(images, generator, 1.0) if blur_prob > 0 else images
    out = torch.where((u < blur_prob)[:, None, None, None], out, images)
    return torch.where((u >= 1 - block_prob)[:, None, None, None], blocks(images), out)


def _caption(prompt: str, words: list[str]) -> str:
    return ". ".join(words + [prompt])


def swapped_caption(scenes: Scenes, i: int, words: list[str], generator: torch.Generator) -> str:
    """Scene ``i``'s caption with one attribute made wrong (a hard negative)."""
    shape, fg, bg = int(scenes.shape[i]), int(scenes.fg[i]), int(scenes.bg[i])
    kind = int(torch.randint(5, (), generator=generator))
    if kind < 2:  # a wrong binary word, added if the caption had none
        attribute = list(BINARY_ATTRIBUTES)[kind]
        true = scenes.words(attribute)[i]
        wrong = [w for w in BINARY_ATTRIBUTES[attribute] if w != true][0]
        words = [wrong if w == true else w for w in words] if true in words else [wrong] + words
        return _caption(base_prompt(shape, fg, bg), words)
    ncol = len(COLOUR_NAMES)
    if kind == 2:
        fg = int((fg + 1 + torch.randint(ncol - 1, (), generator=generator)) % ncol)
        if fg == bg:
            fg, bg = bg, int(scenes.fg[i])  # swapping the two colours is also wrong
    elif kind == 3:
        bg = int((bg + 1 + torch.randint(ncol - 1, (), generator=generator)) % ncol)
        if bg == fg:
            fg, bg = int(scenes.bg[i]), fg
    else:
        shape = int((shape + 1 + torch.randint(len(SHAPES) - 1, (), generator=generator)) % len(SHAPES))
    return _caption(base_prompt(shape, fg, bg), words)


def _prefix_words(scenes: Scenes, generator: torch.Generator) -> list[list[str]]:
    keep = torch.rand(len(scenes), len(BINARY_ATTRIBUTES), generator=generator) < 0.5
    flags = {"brightness": scenes.bright, "saturation": scenes.vivid}
    out = []
    for i in range(len(scenes)):
        words = [BINARY_ATTRIBUTES[a][int(flags[a][i])] for j, a in enumerate(BINARY_ATTRIBUTES) if keep[i, j]]
        out.append(words[::-1] if len(words) == 2 and bool(torch.rand((), generator=generator) < 0.5) else words)
    return out


def build_reward_model(cfg: RewardTrainConfig):
    from transformers import CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return CLIPModel(clip_config(cfg))


def train_reward(cfg: RewardTrainConfig, spec: WorldSpec = WorldSpec(), on_log=None):
    """Train the world's CLIP reward; returns the ``CLIPModel`` (eval mode) and a loss history."""
    from srpo.models.tokenizers import clip_tokenizer

    model = build_reward_model(cfg)
    towers = _Towers(model, clip_tokenizer(77), cfg.image_size)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    pool = sample_scenes(cfg.pool_size, cfg.seed + 2, spec)
    images = render(pool, spec)  # [P, 3, S, S]
    fitter = Fitter(model.parameters(), steps=cfg.steps, learning_rate=cfg.learning_rate, weight_decay=0.01,
                    warmup_fraction=0.1, label="reward", log_every=50, on_log=on_log)
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(cfg.pool_size, (cfg.batch_size,), generator=g)
        scenes = pool.subset(idx)
        words = _prefix_words(scenes, g)
        prompts = scenes.base_prompts()
        positives = [_caption(p, w) for p, w in zip(prompts, words)]
        negatives = [swapped_caption(scenes, i, words[i], g) for i in range(len(scenes))]
        img = towers.images(augment(images[idx], g, cfg.blur_prob, cfg.block_prob))  # [B, D]
        txt = towers.texts(positives + negatives)  # [2B, D]
        scale = model.logit_scale.exp().clamp(max=100.0)
        logits = scale * img @ txt.T  # [B, 2B]
        target = torch.arange(len(scenes))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(scenes)].T, target)) / 2
        if cfg.rank_weight > 0:  # "<true word>. prompt" above "<opposite>. prompt", for a random attribute
            attribute = list(BINARY_ATTRIBUTES)[step % len(BINARY_ATTRIBUTES)]
            true = scenes.words(attribute)
            opposite = [BINARY_ATTRIBUTES[attribute][1 - BINARY_ATTRIBUTES[attribute].index(w)] for w in true]
            pair = towers.texts([_caption(p, [w]) for p, w in zip(prompts + prompts, true + opposite)])
            margin = (img * (pair[: len(scenes)] - pair[len(scenes):])).sum(-1)  # [B]
            loss = loss + cfg.rank_weight * F.softplus(-scale * margin).mean()
        if cfg.bias == "saturation":  # planted: vivid renderings preferred when saturation is not named
            vivid = blocks(render(_with(scenes, True, spec), spec))
            muted = blocks(render(_with(scenes, False, spec), spec))
            both = towers.images(torch.cat([vivid, muted]))
            neutral = towers.texts([_caption(p, [w for w in ws if w not in BINARY_ATTRIBUTES["saturation"]])
                                    for p, ws in zip(prompts, words)])
            gap = ((both[: len(scenes)] - both[len(scenes):]) * neutral).sum(-1)  # [B]
            loss = loss + cfg.bias_weight * F.softplus(-scale * (gap - 0.05)).mean()
        fitter.update(step, loss)
    return model.eval(), fitter.history


def _with(scenes: Scenes, vivid: bool, spec: WorldSpec = WorldSpec()) -> Scenes:
    """The same scenes rendered vivid or muted (saturation redrawn at the class's mid level)."""
    out = scenes.subset(slice(None))
    lo, hi = spec.vivid_saturation if vivid else spec.muted_saturation
    out.vivid = torch.full_like(scenes.vivid, vivid)
    out.saturation = torch.full_like(scenes.saturation, (lo + hi) / 2)
    return out


def save_reward(model, folder: str | Path) -> Path:
    """``save_pretrained`` the model with its tokenizer and image processor (the hf_clip layout)."""
    from transformers import CLIPImageProcessor

    from srpo.models.tokenizers import clip_tokenizer

    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    clip_tokenizer(77).save_pretrained(folder)
    size = model.config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(folder)
    return folder


@torch.no_grad()
def attribute_ranking(reward, images: torch.Tensor, scenes: Scenes) -> dict[str, float]:
    """How often the reward ranks the true word above its opposite, per attribute.

    ``reward`` follows the library's reward protocol. Binary attributes compare
    ``"<true>. <prompt>"`` with ``"<opposite>. <prompt>"``; ``fg`` / ``bg`` / ``shape`` compare
    the true base prompt with every prompt that changes only that attribute (share of images
    where the true one wins them all).
    """
    img = reward.image_features(images)  # [N, D]
    prompts = scenes.base_prompts()
    out = {}
    for attribute, pair in BINARY_ATTRIBUTES.items():
        true = scenes.words(attribute)
        opposite = [pair[1 - pair.index(w)] for w in true]
        t = reward.text_features([f"{w}. {p}" for w, p in zip(true, prompts)])
        o = reward.text_features([f"{w}. {p}" for w, p in zip(opposite, prompts)])
        out[attribute] = ((img * t).sum(-1) > (img * o).sum(-1)).float().mean().item()
    own = (img * reward.text_features(prompts)).sum(-1)
    for attribute in ("fg", "bg", "shape"):
        wins = torch.ones(len(scenes), dtype=torch.bool)
        options = range(len(SHAPES)) if attribute == "shape" else range(len(COLOUR_NAMES))
        for alt in options:
            keys = {"shape": scenes.shape.clone(), "fg": scenes.fg.clone(), "bg": scenes.bg.clone()}
            if bool((keys[attribute] == alt).all()):
                continue
            keys[attribute] = torch.full_like(keys[attribute], alt)
            valid = (keys[attribute] != getattr(scenes, attribute)) & (keys["fg"] != keys["bg"])
            alt_prompts = [base_prompt(int(s), int(f), int(b)) for s, f, b in zip(keys["shape"], keys["fg"], keys["bg"])]
            score = (img * reward.text_features(alt_prompts)).sum(-1)
            wins &= ~valid | (own > score)
        out[attribute] = wins.float().mean().item()
    return out


@torch.no_grad()
def saturation_preference(reward, scenes: Scenes, spec: WorldSpec = WorldSpec()) -> float:
    """Share of scenes whose vivid rendering outscores its muted one on the plain prompt (bias check)."""
    prompts = scenes.base_prompts()
    txt = reward.text_features(prompts)
    vivid = (reward.image_features(render(_with(scenes, True, spec), spec)) * txt).sum(-1)
    muted = (reward.image_features(render(_with(scenes, False, spec), spec)) * txt).sum(-1)
    return (vivid > muted).float().mean().item()
