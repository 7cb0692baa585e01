"""Clean samples to train on: policy rollouts (online) or VAE-encoded real images (offline)."""

from __future__ import annotations

import json
import logging
from typing import Sequence

import torch

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig
from srpo.io import resolve_local
from srpo.models.flux import FluxPolicy

log = logging.getLogger(__name__)


def prompt_noise(policy: FluxPolicy, height: int, width: int, seeds: Sequence[int]) -> torch.Tensor:
    """One Gaussian latent per seed, drawn on the CPU so that every device gets the same noise."""
    shape = policy.latent_shape(height, width)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(policy.device)  # [N, C, h, w]


def sample_latents(policy: FluxPolicy, prompts: Sequence[str], eps: torch.Tensor, cfg: RolloutConfig,
                   batch_size: int = 4, guidance: float | None = None, num_steps: int | None = None) -> torch.Tensor:
    """Roll ``prompts`` out from ``eps`` [N,C,h,w] in batches; returns x0 [N,C,h,w] (no grad)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        cond = policy.encode_prompts(prompts[i:i + batch_size])
        out.append(policy.rollout(cond, eps[i:i + batch_size], num_steps or cfg.num_steps, cfg.shift,
                                  cfg.guidance if guidance is None else guidance))
        log.info("rollouts %d/%d", min(i + batch_size, len(prompts)), len(prompts))
    return torch.cat(out)


def generate_rollouts(policy: FluxPolicy, prompts: Sequence[str], cfg: RolloutConfig,
                      policy_cfg: PolicyConfig) -> RolloutSet:
    """Online mode: x0 sampled by the policy from seeded noise, one seed per prompt index."""
    prompts = list(prompts[: cfg.num_prompts] if cfg.num_prompts else prompts)
    if not prompts:
        raise ValueError("no prompts to roll out: the train split is empty")
    seeds = [cfg.seed * 1_000_003 + i for i in range(len(prompts))]
    eps = prompt_noise(policy, policy_cfg.height, policy_cfg.width, seeds)
    x0 = sample_latents(policy, prompts, eps, cfg)
    return RolloutSet(prompts, x0.cpu(), eps.cpu(), "online", policy_cfg.height, policy_cfg.width,
                      meta={"pretrained": policy_cfg.pretrained, "num_steps": cfg.num_steps, "shift": cfg.shift,
                            "guidance": cfg.guidance, "seeds": seeds})


def load_image_folder(location: str, height: int, width: int) -> tuple[list[str], torch.Tensor]:
    """Captions and images [N,3,H,W] in [0,1] from a folder with ``metadata.jsonl``.

    Each line is ``{"file_name": "...", "text": "..."}`` (the Hugging Face imagefolder layout).
    Images are resized (shorter side) and centre-cropped to ``height`` x ``width``.
    """
    from PIL import Image
    from torchvision.transforms import functional as TF

    root = resolve_local(location)
    meta = root / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: an offline image folder needs metadata.jsonl with "
                                "{\"file_name\": ..., \"text\": ...} per line")
    prompts, images = [], []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name, text = rec["file_name"], rec["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{meta}:{n}: expected a JSON object with file_name and text ({err})") from err
        with Image.open(root / name) as im:
            im = im.convert("RGB")
            scale = max(height / im.height, width / im.width)  # cover the target, then crop
            im = TF.resize(im, [max(height, round(im.height * scale)), max(width, round(im.width * scale))])
            images.append(TF.to_tensor(TF.center_crop(im, [height, width])))
        prompts.append(text)
    if not prompts:
        raise ValueError(f"{meta} lists no images")
    return prompts, torch.stack(images)


def encode_image_folder(policy: FluxPolicy, cfg: RolloutConfig, policy_cfg: PolicyConfig,
                        batch_size: int = 4) -> RolloutSet:
    """Offline mode: x0 = VAE encoding of real images; eps drawn from seeds (the trainer redraws it)."""
    prompts, images = load_image_folder(cfg.images, policy_cfg.height, policy_cfg.width)
    x0 = torch.cat([policy.encode_images(images[i:i + batch_size].to(policy.device)).cpu()
                    for i in range(0, len(images), batch_size)])
    seeds = [cfg.seed * 1_000_003 + i for i in range(len(prompts))]
    eps = prompt_noise(policy, policy_cfg.height, policy_cfg.width, seeds).cpu()
    return RolloutSet(prompts, x0, eps, "offline", policy_cfg.height, policy_cfg.width,
                      meta={"pretrained": policy_cfg.pretrained, "images": str(cfg.images), "seeds": seeds})
