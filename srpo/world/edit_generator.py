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
attribute from the instruction, everything else copied from the source tokens. The result saves with
``save_pretrained`` and loads through ``load_policy`` as family ``flux-kontext`` (published as
``builtin:shapes-kontext`` by ``configs/shapes_bootstrap_edit.yaml``).

The recipe, and why (``python -m benchmarks.edit_model``, 120-240 held-out edits; docs/results.md):

- **Start from the world generator** (:func:`warm_start`), as FLUX.1 Kontext starts from FLUX.1: the
  source tokens are only more image tokens, and the generator already draws the world. From scratch
  the model spends its steps learning to draw (150 x 32 steps: kept 52 %; warm: 68 %).
- **Sharpen attention** (:func:`sharpen_attention`): copying needs each noisy token to read the source
  token at its own position, which RoPE allows only with logits larger than unit-gain RMS-normed q/k
  of head_dim 24 can make; scaled gains are what moved the shape's outline (kept 44 % -> 68 % at
  gain 2.5, 600 x 32 steps). Without them the model copies colours but redraws the shape elsewhere.
- **No-op pairs** (``identity_fraction``, :func:`edit_pool`): a share of pairs whose target is the
  source. The model then leaves about that share of its edits undone, as under-editing edit models
  do, and copies more exactly; with none it does every edit (600 x 32 steps: done 100 %), which would
  leave reward training nothing to show on "done".
- **Train long enough to copy the outline**: 600 x 32 steps keep 89 % of the unnamed attributes (the outline
  70 %), 1200 x 32 92 %, 2400 x 32 (the default) 96 % (the outline 88 %), done 26-33 % throughout.
"""

from __future__ import annotations

import time
from pathlib import Path

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

    steps: int = Field(2400, ge=0)
    batch_size: int = Field(32, ge=1)
    guidance_range: tuple[float, float] = (1.0, 3.5)
    attributes: tuple[str, ...] = DEFAULT_EDITS
    pool_size: int = Field(2048, ge=16, description="edit triples drawn once; training samples from them")
    check_edits: int = Field(240, ge=0, description="held-out edits the bootstrap grades the model on (0: none)")
    warm_start: bool = Field(True, description="start from the world generator's transformer (see warm_start)")
    attention_gain: float = Field(4.0, gt=0, description=(
        "the transformer's q/k RMSNorm gains are multiplied by this before training (attention logits by its "
        "square): sharp enough attention for a noisy token to read the source token at its own position"))
    identity_fraction: float = Field(0.5, ge=0.0, lt=1.0, description=(
        "share of training pairs whose target is the source unchanged (a no-op edit): the model then leaves "
        "about this share of its edits undone, as under-editing edit models do, and reward training has a gap "
        "to close; 0 trains the full editor"))

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


def edit_pool(sources: torch.Tensor, targets: torch.Tensor, instructions: list[str], identity_fraction: float
              ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The training pool: the N triples, then M = N f / (1 - f) no-op pairs (the first M triples again, with the
    source as the target), so a uniform draw is a no-op with probability ``identity_fraction`` f.
    Returns (sources [N+M,...], targets [N+M,...], instructions [N+M])."""
    n = len(instructions)
    m = round(n * identity_fraction / (1.0 - identity_fraction))
    again = torch.arange(m) % n
    return (torch.cat([sources, sources[again]]), torch.cat([targets, sources[again]]),
            instructions + [instructions[i] for i in again.tolist()])


def train_edit_transformer(policy: FluxKontextPolicy, cfg: EditGeneratorConfig, sources: torch.Tensor,
                           targets: torch.Tensor, instructions: list[str], on_log=None) -> list[float]:
    """Flow matching on target latents ``targets`` [N,C,h,w] given source latents ``sources`` [N,C,h,w]
    (with ``cfg.identity_fraction`` of no-op pairs, :func:`edit_pool`)."""
    pool_sources, pool_targets, pool_texts = edit_pool(sources, targets, instructions, cfg.identity_fraction)

    def cond_of(idx: torch.Tensor, g: torch.Generator):  # the instructions, their sources' tokens appended
        return policy.encode_prompts([pool_texts[i] for i in idx.tolist()], pool_sources[idx])

    return train_flow(policy, cfg, pool_targets, cond_of, seed=cfg.seed + 29, label="edit-flow", on_log=on_log)


def warm_start(pipe, generator: str | Path) -> None:
    """Copy the world generator's trained transformer (a FLUX pipeline folder) into ``pipe``'s, as FLUX.1
    Kontext starts from FLUX.1: same architecture, the source tokens are only more image tokens."""
    from diffusers import FluxTransformer2DModel

    folder = Path(generator) / "transformer"
    if not folder.is_dir():
        raise ValueError(f"edit model init {str(generator)!r}: no transformer/ folder there; give the world "
                         "generator's pipeline folder (builtin:shapes-flux's), or set edit.warm_start: false to train "
                         "from scratch")
    source = FluxTransformer2DModel.from_pretrained(folder)
    plain = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731  (JSON reads tuples as lists)
    mine = {k: plain(v) for k, v in pipe.transformer.config.items() if not k.startswith("_")}
    theirs = {k: plain(source.config.get(k)) for k in mine}
    if mine != theirs:
        diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
        raise ValueError(f"edit model init {str(generator)!r}: its transformer differs from the edit config's, "
                         f"(edit, generator) per setting: {diff}; give the edit config the generator's sizes")
    pipe.transformer.load_state_dict(source.state_dict())


QK_NORMS = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")


@torch.no_grad()
def sharpen_attention(transformer, gain: float) -> None:
    """Multiply every attention's q/k RMSNorm gains by ``gain`` (text and image alike, so joint attention keeps
    its balance): logits scale by ``gain**2``. Why: with RMS-normalised q and k of ``head_dim`` 24 and unit gains,
    no logit exceeds ~sqrt(24) ~ 5, and RoPE at 4x4 token positions separates a token's own position from its
    neighbour's by cos(0) - cos(1) ~ 0.46 of that: attention cannot single out the source token at the same
    position, and gains grow far too slowly under AdamW to fix it in a few hundred steps."""
    for name, param in transformer.named_parameters():
        if name.rsplit(".", 2)[-2] in QK_NORMS:
            param.mul_(gain)


def train_edit_generator(cfg: EditGeneratorConfig, spec: WorldSpec = WorldSpec(), on_log=None,
                         init: str | Path | None = None):
    """Build and train the edit pipeline (from the generator folder ``init`` when given, see :func:`warm_start`);
    returns ``(pipe, info)`` with the loss curve and timings."""
    start = time.perf_counter()
    pipe = build_edit_pipeline(cfg)
    if init is not None:
        warm_start(pipe, init)
    sharpen_attention(pipe.transformer, cfg.attention_gain)
    triples = draw_edits(cfg.pool_size, cfg.seed + 5, spec, cfg.attributes)
    shift, scale, _ = fit_latent_scaling(pipe.vae, torch.cat([triples.sources, triples.targets]))
    z = lambda images: (latent_modes(pipe.vae, images) - shift) * scale  # noqa: E731  [N, C, h, w]
    policy = FluxKontextPolicy(pipe, "cpu")
    every = all_instructions(cfg.attributes)
    policy.max_cached_prompts = len(every)
    policy.encode_prompts(every)  # every instruction encoded once, in one batch
    curve = train_edit_transformer(policy, cfg, z(triples.sources), z(triples.targets), triples.instructions,
                                   on_log=on_log)
    info = {"flow_curve": curve, "init": None if init is None else str(init), "latent_shift": shift, "latent_scale": scale, "seconds": time.perf_counter() - start,
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
