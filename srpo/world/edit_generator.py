"""The world's edit model: a tiny FLUX.1 Kontext trained by flow matching on drawn edit triples.

Same machinery as the world's generator (:mod:`srpo.world.generator`): the fixed analytic VAE
(8x8 block means), ``FluxTransformer2DModel`` from a small config, random frozen text encoders
whose T5 vocabulary holds the instructions' words. The pipeline is a ``FluxKontextPipeline``, and
training goes through the family's own forward (:class:`~srpo.models.flux_kontext.FluxKontextPolicy`):
the source's latent is packed and appended as conditioning tokens with ids ``(1, row, col)``, the
velocity is read from the noisy tokens. Per step, for a batch of (source, instruction, target)
triples (:func:`srpo.world.edits.draw_edits`)::

    x_s = (1 - s) z_target + s eps,   loss = | v(x_s, s, instruction, z_source) - (eps - z_target) |^2

Every triple changes exactly one attribute, so the model learns both halves of an edit: the named
attribute from the instruction, everything else copied from the source tokens. The result saves with ``save_pretrained`` and
loads through ``load_policy`` as family ``flux-kontext`` (published as ``builtin:shapes-kontext``).
"""

from __future__ import annotations

import time

import torch
from pydantic import Field, field_validator

from srpo.models.flux_kontext import FluxKontextPolicy
from srpo.models.tiny import TinyFluxSpec
from srpo.world.edits import (DEFAULT_EDITS, EDIT_WORDS, all_instructions, check_attributes, draw_edits, edit_summary,
                              grade_edits, kept_by_attribute)
from srpo.world.generator import (GeneratorConfig, analytic_vae, fit_latent_scaling, latent_modes, sample_images,
                                  train_flow)
from srpo.world.shapes import WorldSpec


class EditGeneratorConfig(GeneratorConfig):
    """Sizes and training of the world's edit model (the generator's fields, edit defaults)."""

    steps: int = Field(1500, ge=0)
    guidance_range: tuple[float, float] = (1.0, 3.5)
    attributes: tuple[str, ...] = DEFAULT_EDITS
    pool_size: int = Field(2048, ge=16, description="edit triples drawn once; training samples from them")

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, attributes: tuple[str, ...]) -> tuple[str, ...]:
        return check_attributes(attributes)

    def flux_spec(self) -> TinyFluxSpec:
        spec = super().flux_spec()
        return spec.model_copy(update={"t5_words": tuple(dict.fromkeys([*spec.t5_words, *EDIT_WORDS]))})


def build_edit_pipeline(cfg: EditGeneratorConfig):
    """The untrained ``FluxKontextPipeline`` (transformer random from ``cfg.seed``) with the fixed VAE.

    The scheduler is the world generator's static shift 3 (the rollouts pass the same shift)."""
    from diffusers import FluxKontextPipeline

    from srpo.models.tiny import build_tiny_flux_pipeline

    with torch.random.fork_rng(devices=[]):
        parts = build_tiny_flux_pipeline(cfg.flux_spec(), seed=cfg.seed).components
    pipe = FluxKontextPipeline(**{k: v for k, v in parts.items() if k not in ("image_encoder", "feature_extractor")})
    analytic_vae(pipe.vae)
    return pipe


def train_edit_transformer(policy: FluxKontextPolicy, cfg: EditGeneratorConfig, sources: torch.Tensor,
                           targets: torch.Tensor, instructions: list[str], on_log=None) -> list[float]:
    """Flow matching on target latents ``targets`` [N,C,h,w] given source latents ``sources`` [N,C,h,w]."""
    def cond_of(idx: torch.Tensor, g: torch.Generator):  # the instructions, their sources' tokens appended
        return policy.encode_prompts([instructions[i] for i in idx.tolist()], sources[idx])

    return train_flow(policy, cfg, targets, cond_of, seed=cfg.seed + 29, label="edit-flow", on_log=on_log)


def train_edit_generator(cfg: EditGeneratorConfig, spec: WorldSpec = WorldSpec(), on_log=None):
    """Build and train the edit pipeline; returns ``(pipe, info)`` with the loss curve and timings."""
    start = time.perf_counter()
    pipe = build_edit_pipeline(cfg)
    triples = draw_edits(cfg.pool_size, cfg.seed + 5, spec, cfg.attributes)
    shift, scale, _ = fit_latent_scaling(pipe.vae, torch.cat([triples.sources, triples.targets]))
    z = lambda images: (latent_modes(pipe.vae, images) - shift) * scale  # noqa: E731  [N, C, h, w]
    policy = FluxKontextPolicy(pipe, "cpu")
    every = all_instructions(cfg.attributes)
    policy.max_cached_prompts = len(every)
    policy.encode_prompts(every)  # every instruction encoded once, in one batch
    curve = train_edit_transformer(policy, cfg, z(triples.sources), z(triples.targets), triples.instructions,
                                   on_log=on_log)
    info = {"flow_curve": curve, "latent_shift": shift, "latent_scale": scale, "seconds": time.perf_counter() - start,
            "transformer_params": sum(p.numel() for p in pipe.transformer.parameters())}
    return pipe, info


def edit_images(policy, sources: torch.Tensor, instructions: list[str], seeds: list[int], num_steps: int = 25,
                 shift: float = 3.0, guidance: float = 2.5, batch_size: int = 64) -> torch.Tensor:
    """Edited images [N,3,H,W] in [0,1] of ``sources`` [N,3,H,W]: one Euler rollout per (source, instruction, seed)."""
    return sample_images(policy, instructions, seeds, num_steps, shift, guidance, batch_size, sources=sources)


@torch.no_grad()
def check_edit_model(policy, spec: WorldSpec = WorldSpec(), n: int = 240, seed: int = 777,
                     attributes=DEFAULT_EDITS, num_steps: int = 25, guidance: float = 2.5) -> dict:
    """``done`` / ``kept`` of ``policy``'s edits of ``n`` held-out drawn triples, next to the two bounds.

    Every image is compared with the source as the policy's VAE returns it (``decode(encode(source))``),
    so the grade judges the edit, not the VAE: ``copy_source`` (the reference itself: done 0, kept 1)
    and ``targets_through_vae`` (the drawn answers through the same VAE) bracket the model.
    """
    held = draw_edits(n, seed, spec, attributes)
    decode = lambda images: torch.cat([policy.decode(policy.encode_sources(images[i:i + 64].to(policy.device))).cpu()  # noqa: E731
                                       for i in range(0, len(images), 64)])
    ref = decode(held.sources)
    edited = edit_images(policy, held.sources, held.instructions, [seed * 1000 + i for i in range(n)], num_steps,
                          guidance=guidance)
    out = {name: edit_summary(*grade_edits(images, ref, held.instructions, spec), held.instructions)
           for name, images in (("model", edited), ("copy_source", ref), ("targets_through_vae", decode(held.targets)))}
    out["model"]["kept_by_attribute"] = kept_by_attribute(edited, ref, held.instructions, spec)
    return out
