"""Clean samples to train on: policy rollouts (online) or VAE-encoded real images (offline)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig
from srpo.io import resolve_local
from srpo.models.base import Policy
from srpo.noise import prompt_noise
from srpo.prompts import read_utf8_text, text_lines

log = logging.getLogger(__name__)


def sample_latents(policy: Policy, prompts: Sequence[str], eps: torch.Tensor, cfg: RolloutConfig,
                   batch_size: int = 4, guidance: float | None = None, num_steps: int | None = None,
                   sources: torch.Tensor | None = None) -> torch.Tensor:
    """Roll ``prompts`` out from ``eps`` [N,C,h,w] in batches; returns x0 [N,C,h,w] (no grad). ``sources``
    [N,3,H,W] in [0, 1]: an edit family's source images, one per prompt."""
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        cond = (policy.encode_prompts(chunk) if sources is None else
                policy.encode_prompts(chunk, policy.encode_sources(sources[i:i + batch_size].to(policy.device))))
        out.append(policy.rollout(cond, eps[i:i + batch_size], num_steps or cfg.num_steps, cfg.shift,
                                  cfg.guidance if guidance is None else guidance))
        log.info("rollouts %d/%d", min(i + batch_size, len(prompts)), len(prompts))
    return torch.cat(out)


def generate_rollouts(policy: Policy, prompts: Sequence[str], cfg: RolloutConfig,
                      policy_cfg: PolicyConfig) -> RolloutSet:
    """Online mode: x0 sampled by the policy from seeded noise, one seed per prompt index."""
    prompts = list(prompts[: cfg.num_prompts] if cfg.num_prompts else prompts)
    if not prompts:
        raise ValueError("no prompts to roll out: the train split is empty")
    seeds = [cfg.seed * 1_000_003 + i for i in range(len(prompts))]
    eps = prompt_noise(policy, policy_cfg.height, policy_cfg.width, seeds)
    x0 = sample_latents(policy, prompts, eps, cfg)
    return RolloutSet(prompts, x0.float().cpu(), eps.float().cpu(), "online", policy_cfg.height, policy_cfg.width,
                      meta={"pretrained": policy_cfg.pretrained, "num_steps": cfg.num_steps, "shift": cfg.shift,
                            "guidance": cfg.guidance, "seeds": seeds},
                      conditioning=policy.stored_conditioning(prompts))  # the trainer loads no text encoder


def image_folder_records(location: str, limit: int | None = None) -> tuple[Path, list[tuple[str, str]]]:
    """The folder and its ``(file_name, caption)`` pairs from ``metadata.jsonl`` (the first ``limit``).

    Each line is ``{"file_name": "...", "text": "..."}`` (the Hugging Face imagefolder layout).
    """
    root = resolve_local(location)
    meta = root / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: an offline image folder needs metadata.jsonl with "
                                "{\"file_name\": ..., \"text\": ...} per line")
    records = []
    for n, line in enumerate(text_lines(read_utf8_text(meta, str(meta))), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            records.append((rec["file_name"], rec["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{meta}:{n}: expected a JSON object with file_name and text ({err})") from err
        if limit is not None and len(records) == limit:
            break
    if not records:
        raise ValueError(f"{meta} lists no images")
    return root, records


def load_image(path: Path, height: int, width: int) -> torch.Tensor:
    """One image as [3, H, W] in [0, 1]: the shorter side resized to cover, then centre-cropped."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = max(height / im.height, width / im.width)  # cover the target, then crop
        im = TF.resize(im, [max(height, round(im.height * scale)), max(width, round(im.width * scale))])
        return TF.to_tensor(TF.center_crop(im, [height, width]))


def encode_image_folder(policy: Policy, cfg: RolloutConfig, policy_cfg: PolicyConfig,
                        batch_size: int = 4) -> RolloutSet:
    """Offline mode: x0 = VAE encoding of real images; eps drawn from seeds (the trainer redraws it).

    Images are read ``batch_size`` at a time, so memory holds one batch of pixels, not the folder;
    ``cfg.num_prompts`` takes the first images of ``metadata.jsonl``.
    """
    root, records = image_folder_records(cfg.images, cfg.num_prompts)
    x0 = []
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        pixels = torch.stack([load_image(root / name, policy_cfg.height, policy_cfg.width) for name, _ in batch])
        x0.append(policy.encode_images(pixels.to(policy.device)).cpu())  # [b, C, h, w]
        log.info("encoded %d/%d offline images", start + len(batch), len(records))
    prompts = [text for _, text in records]
    seeds = [cfg.seed * 1_000_003 + i for i in range(len(prompts))]
    eps = prompt_noise(policy, policy_cfg.height, policy_cfg.width, seeds).cpu()
    return RolloutSet(prompts, torch.cat(x0), eps, "offline", policy_cfg.height, policy_cfg.width,
                      meta={"pretrained": policy_cfg.pretrained, "images": str(cfg.images), "seeds": seeds},
                      conditioning=policy.stored_conditioning(prompts))  # the trainer loads no text encoder


def edit_rollouts(policy: Policy, cfg: RolloutConfig, policy_cfg: PolicyConfig, batch_size: int = 4) -> RolloutSet:
    """Rollouts from ``cfg.edits``'s (source image, instruction) pairs (:mod:`srpo.edit_data`): prompts are the
    instructions, each sample keeps its source pixels [N,3,H,W] (at the policy's size) and the pairs' captions.

    Online: x0 is the policy's edit of the source from seeded noise. Offline: x0 encodes the pair's target image.
    """
    from srpo.edit_data import load_edit_pairs

    if not policy.edits_images:
        raise ValueError(f"rollouts.edits {cfg.edits!r} with policy.family {policy.family!r}, a text-to-image model: "
                         "use an edit family (flux-kontext, qwen-image-edit, qwen-image-edit-plus) or remove rollouts.edits")
    root, pairs = load_edit_pairs(cfg.edits, require_target=cfg.mode == "offline")
    pairs = pairs[: cfg.num_prompts] if cfg.num_prompts else pairs
    size = policy_cfg.height, policy_cfg.width
    sources = torch.stack([load_image(root / p.source, *size) for p in pairs])  # [N, 3, H, W]
    prompts = [p.instruction for p in pairs]
    seeds = [cfg.seed * 1_000_003 + i for i in range(len(prompts))]
    eps = prompt_noise(policy, *size, seeds).cpu()
    if cfg.mode == "online":
        x0 = sample_latents(policy, prompts, eps.to(policy.device), cfg, batch_size, sources=sources)
    else:
        x0 = torch.cat([policy.encode_images(torch.stack([load_image(root / p.target, *size) for p in
                                                           pairs[i:i + batch_size]]).to(policy.device)).cpu()
                        for i in range(0, len(pairs), batch_size)])  # [N, C, h, w]
    captions = lambda field: (None if any(getattr(p, field) is None for p in pairs)  # noqa: E731
                              else [getattr(p, field) for p in pairs])
    meta = {"pretrained": policy_cfg.pretrained, "edits": str(cfg.edits), "seeds": seeds}
    if cfg.mode == "online":
        meta.update(num_steps=cfg.num_steps, shift=cfg.shift, guidance=cfg.guidance)
    return RolloutSet(prompts, x0.float().cpu(), eps, cfg.mode, *size, meta=meta,
                      conditioning=policy.stored_conditioning(prompts, policy.encode_sources(sources.to(policy.device))),
                      sources=sources, source_prompts=captions("source_text"), target_prompts=captions("target_text"))
