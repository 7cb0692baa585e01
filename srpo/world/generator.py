"""The world's generator: a small FLUX pipeline trained by flow matching on shapes-world images.

Architecture: the library's tiny FLUX pipeline (:func:`srpo.models.tiny.build_tiny_flux_pipeline`),
i.e. diffusers ``FluxTransformer2DModel`` + an x8 ``AutoencoderKL`` + CLIP and T5 text encoders
with offline tokenizers, at sizes that train on two CPU cores in minutes. Training has two
stages:

1. the VAE is fixed, not trained (:func:`analytic_vae`): an exact 8x8 block-mean encoder and a
   nearest-neighbour decoder built inside ``AutoencoderKL``'s architecture, so colours, brightness
   and saturation survive exactly; the latent statistics set ``shift_factor`` /
   ``scaling_factor`` so latents are ~N(0, 1) per element, as FLUX's are;
2. the transformer, by rectified-flow matching on those latents: ``x_s = (1 - s) x0 + s eps``,
   target ``eps - x0``, noise levels drawn on the sampler's shifted schedule, captions with
   random attribute prefixes, FLUX's guidance input drawn over the range the configs use.
   The text encoders stay random and frozen (they only have to tell captions apart).

The result is saved with ``save_pretrained`` and loads through the same
``srpo.models.families.load_policy`` as FLUX.1-dev.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from srpo.config import StrictModel
from srpo.models.tiny import TinyFluxSpec, build_tiny_flux_pipeline
from srpo.models.tokenizers import DEFAULT_T5_WORDS
from srpo.noise import seeded_noise
from srpo.schedules import shift_sigma
from srpo.world.fitting import Fitter
from srpo.world.shapes import WORLD_WORDS, WorldSpec, all_base_prompts, captions, render, sample_scenes


class GeneratorConfig(StrictModel):
    """Sizes and training of the world's FLUX generator."""

    # architecture (FluxTransformer2DModel from a small config; the VAE is fixed, see analytic_vae)
    layers: int = 2  # double-stream blocks
    single_layers: int = 2
    heads: int = 4
    head_dim: int = 24
    axes_dims_rope: tuple[int, int, int] = (4, 10, 10)
    text_dim: int = 64
    pooled_dim: int = 64
    t5_max_length: int = 16
    # transformer training
    steps: int = Field(2000, ge=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    shift: float = Field(3.0, gt=0, description="noise levels drawn as shift(u), u ~ U(0, 1): the sampler's schedule")
    guidance_range: tuple[float, float] = (1.0, 4.0)
    attribute_prob: float = Field(0.5, ge=0, le=1, description="chance that a caption names each binary attribute")
    pool_size: int = Field(8192, ge=16, description="world images drawn once; training samples from them")
    seed: int = 0

    def flux_spec(self) -> TinyFluxSpec:
        return TinyFluxSpec(
            num_layers=self.layers, num_single_layers=self.single_layers, num_heads=self.heads,
            head_dim=self.head_dim, axes_dims_rope=self.axes_dims_rope, text_dim=self.text_dim,
            pooled_dim=self.pooled_dim, latent_channels=LATENT_CHANNELS, vae_channels=2 * LATENT_CHANNELS,
            vae_norm_groups=1, t5_max_length=self.t5_max_length,
            t5_words=tuple(dict.fromkeys([*DEFAULT_T5_WORDS, *WORLD_WORDS])))


#: The fixed VAE's latent: the mean colour (R, G, B) of each 8x8 pixel block.
LATENT_CHANNELS = 3
_SIGNAL = 1e-5  # activations entering GroupNorm: far below sqrt(eps) = 1e-3, so the norm is linear
_LIFT = 20.0  # GroupNorm bias that puts SiLU in its linear range: SiLU(20 + u) = 20 + u to ~1e-7


@torch.no_grad()
def analytic_vae(vae) -> None:
    """Turn a diffusers ``AutoencoderKL`` (x8, channels 2C, one GroupNorm group) into a fixed linear one.

    Encoder: the mean of each 8x8 pixel block (per RGB channel). Decoder: nearest-neighbour
    upsampling of those means. Built inside the unchanged architecture, so ``from_pretrained``,
    ``encode`` and a differentiable ``decode`` work as for FLUX's VAE:

    - every ResNet's second convolution is zero, so each ResNet is the identity;
    - each signal travels as the pair (+a x, -a x) with a = 1e-5, so a GroupNorm's mean is exactly
      zero and its variance (< 1e-10) is negligible against eps = 1e-6: the norm multiplies by
      1000, its weight scales back to x and its bias (+20) keeps SiLU in its linear range;
    - encoder downsamplers average 2x2 blocks, decoder upsamplers copy (centre tap only).

    Colours therefore survive encoding and decoding exactly (up to the 8x8 averaging), which is
    what the world's grader and reward read; shapes come back as 8x8 "pixel art".
    """
    c = vae.config.latent_channels
    if tuple(vae.config.block_out_channels) != (2 * c,) * 4 or vae.config.norm_num_groups != 1:
        raise ValueError("analytic_vae needs block_out_channels (2C, 2C, 2C, 2C) and norm_num_groups 1")
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.zero_()
            module.bias.zero_()
    eye = torch.eye(c)
    pair = torch.cat([eye, -eye])  # [2C, C]: the signal and its negative

    def centre(conv, matrix, bias=None):
        conv.weight[:, :, conv.weight.shape[2] // 2, conv.weight.shape[3] // 2] = matrix
        if bias is not None:
            conv.bias.copy_(bias)

    def lift(norm):
        norm.weight.fill_(1.0 / (_SIGNAL * 1000.0))
        norm.bias.fill_(_LIFT)

    for coder in (vae.encoder, vae.decoder):
        lift(coder.conv_norm_out)
    for block in vae.encoder.down_blocks:
        for down in block.downsamplers or []:
            down.conv.weight[:, :, 0:2, 0:2] = 0.25 * torch.eye(2 * c)[:, :, None, None]  # 2x2 mean
    for block in vae.decoder.up_blocks:
        for up in block.upsamplers or []:
            centre(up.conv, torch.eye(2 * c))  # nearest-neighbour copy
    centre(vae.encoder.conv_in, _SIGNAL * pair)  # RGB -> (+a rgb, -a rgb)
    out = torch.zeros(2 * c, 2 * c)
    out[:c, :c] = eye  # posterior mean = the signal; log-variance 0 weights
    centre(vae.encoder.conv_out, out, torch.cat([torch.full((c,), -_LIFT), torch.full((c,), -_LIFT)]))
    centre(vae.decoder.conv_in, _SIGNAL * pair)
    out = torch.zeros(c, 2 * c)
    out[:, :c] = eye
    centre(vae.decoder.conv_out, out, torch.full((c,), -_LIFT))
    vae.requires_grad_(False).eval()


def build_pipeline(cfg: GeneratorConfig):
    """The untrained FLUX pipeline (transformer random from ``cfg.seed``) with the fixed VAE."""
    with torch.random.fork_rng(devices=[]):
        pipe = build_tiny_flux_pipeline(cfg.flux_spec(), seed=cfg.seed)
    analytic_vae(pipe.vae)
    return pipe


@torch.no_grad()
def fit_latent_scaling(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[float, float, torch.Tensor]:
    """Set ``shift_factor`` / ``scaling_factor`` so encoded latents are ~N(0, 1).

    Returns the two factors and the scaled latents of ``images`` (the FLUX convention).
    """
    z = latent_modes(vae, images, batch_size)
    shift, scale = float(z.mean()), float(1.0 / z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return shift, scale, (z - shift) * scale


def train_transformer(policy, cfg: GeneratorConfig, x0: torch.Tensor, scenes, on_log=None) -> list[float]:
    """Flow matching on latents ``x0`` [N,C,h,w] of ``scenes``; trains ``policy.transformer`` in place."""
    def cond_of(idx: torch.Tensor, g: torch.Generator):
        prompts = captions(scenes.subset(idx), seed=int(torch.randint(2**31 - 1, (), generator=g)),
                           attribute_prob=cfg.attribute_prob)
        return policy.encode_prompts(prompts)  # cached per caption

    return train_flow(policy, cfg, x0, cond_of, seed=cfg.seed + 23, label="flow", on_log=on_log)


def train_flow(policy, cfg: GeneratorConfig, x0: torch.Tensor, cond_of, seed: int, label: str,
               on_log=None) -> list[float]:
    """Flow matching on latents ``x0`` [N,C,h,w]: each step a batch of rows ``idx`` conditioned by
    ``cond_of(idx, g)``; trains ``policy.transformer`` in place and returns the loss history."""
    g = torch.Generator().manual_seed(seed)
    transformer = policy.transformer
    transformer.train().requires_grad_(True)
    fitter = Fitter(transformer.parameters(), steps=cfg.steps, learning_rate=cfg.learning_rate, weight_decay=0.0,
                    warmup_fraction=0.05, label=label, log_every=100, on_log=on_log)
    for step in range(cfg.steps):
        idx = torch.randint(len(x0), (cfg.batch_size,), generator=g)
        fitter.update(step, flow_loss(policy, cfg, x0[idx], cond_of(idx, g), g))
    transformer.eval()
    return fitter.history


def flow_loss(policy, cfg: GeneratorConfig, clean: torch.Tensor, cond, g: torch.Generator) -> torch.Tensor:
    """Rectified-flow loss of ``clean`` latents [B,C,h,w] under ``cond``: noise, level and guidance drawn from ``g``."""
    eps = torch.randn(clean.shape, generator=g)
    sigma = shift_sigma(torch.rand(clean.shape[0], generator=g), cfg.shift).clamp(1e-3, 1.0)  # [B]
    s = sigma.view(-1, 1, 1, 1)
    lo, hi = cfg.guidance_range
    guidance = lo + (hi - lo) * float(torch.rand((), generator=g))
    v = policy.velocity((1 - s) * clean + s * eps, sigma, cond, guidance)
    return F.mse_loss(v, eps - clean)


@torch.no_grad()
def latent_modes(vae, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1] -> the VAE posterior modes [N,C,h,w], unscaled, in batches."""
    return torch.cat([vae.encode(images[i:i + batch_size] * 2 - 1).latent_dist.mode()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1] -> scaled, shifted latents (the FLUX convention)."""
    cfg = vae.config
    return (latent_modes(vae, images, batch_size) - cfg.shift_factor) * cfg.scaling_factor


def train_generator(cfg: GeneratorConfig, spec: WorldSpec = WorldSpec(), on_log=None):
    """Build and train the whole pipeline; returns ``(pipe, info)`` with loss curves and timings."""
    from srpo.models.flux import FluxPolicy

    start = time.perf_counter()
    pipe = build_pipeline(cfg)
    scenes = sample_scenes(cfg.pool_size, cfg.seed + 5, spec)
    images = render(scenes, spec)
    shift, scale, x0 = fit_latent_scaling(pipe.vae, images)
    policy = FluxPolicy(pipe, "cpu")
    every_caption = _all_captions()
    policy.max_cached_prompts = len(every_caption)  # every caption stays encoded as this one batch made it
    policy.encode_prompts(every_caption)
    flow_curve = train_transformer(policy, cfg, x0, scenes, on_log=on_log)
    info = {"flow_curve": flow_curve, "latent_shift": shift, "latent_scale": scale,
            "seconds": time.perf_counter() - start,
            "transformer_params": sum(p.numel() for p in pipe.transformer.parameters()),
            "vae_params": sum(p.numel() for p in pipe.vae.parameters())}
    return pipe, info


def _all_captions() -> list[str]:
    """Every caption the world can write (base prompts with every attribute prefix)."""
    prefixes = [[], ["dark"], ["bright"], ["muted"], ["vivid"]]
    prefixes += [[b, s] for b in ("dark", "bright") for s in ("muted", "vivid")]
    prefixes += [[s, b] for b in ("dark", "bright") for s in ("muted", "vivid")]
    return [". ".join(p + [prompt]) for prompt in all_base_prompts() for p in prefixes]


def save_pipeline(pipe, folder: str | Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


@torch.no_grad()
def sample_images(policy, prompts: list[str], seeds: list[int], num_steps: int = 25, shift: float = 3.0,
                  guidance: float = 3.5, batch_size: int = 64, sources: torch.Tensor | None = None) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1]: one Euler rollout per (prompt, seed), noise drawn on the CPU per seed.

    ``sources`` [N,3,H,W] (an edit family): each prompt edits its source, at the source's size (else 64 px).
    """
    c, h, w = policy.pipe.vae.config.latent_channels, *policy.latent_shape(
        *(sources.shape[-2:] if sources is not None else (64, 64)))[1:]
    out = []
    for i in range(0, len(prompts), batch_size):
        eps = seeded_noise((c, h, w), seeds[i:i + batch_size]).to(policy.device)  # [b, C, h, w]
        src = None if sources is None else policy.encode_sources(sources[i:i + batch_size].to(policy.device))
        x0 = policy.rollout(policy.encode_prompts(prompts[i:i + batch_size], src), eps, num_steps, shift, guidance)
        out.append(policy.decode(x0).cpu())
    return torch.cat(out)
