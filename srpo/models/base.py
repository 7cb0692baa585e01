"""The one policy interface: a text-to-image flow model seen as a velocity field over plain latents.

Everything above ``srpo/models/`` (trainer, rollouts, evaluation, world, benchmarks, steps) talks
to a :class:`Policy` only. Each family's adapter (``flux.py``, ``qwen_image.py``, ``sd3.py``,
``flux2.py``, ``z_image.py``) hides its packing, text encoders, guidance and VAE normalisation.

The interface, in one place:

===============================================  =================================================
``encode_prompts(prompts, sources) -> cond``     text conditioning, cached per prompt (PromptCache);
                                                 ``cond.repeat(n)`` stacks it n times over; edit
                                                 families also carry ``sources`` (below)
``encode_sources(images) -> sources``            edit families: what they condition on from the
                                                 source images (FLUX.1 Kontext: their latents)
``source_pixels(pil) -> [3,H,W]``               edit families: a PIL source resized as their
                                                 pipeline does it (no resizing surprises)
``velocity(x, sigma, cond, guidance) -> v``      ``x [B,C,h,w]``, ``sigma [B]`` -> ``[B,C,h,w]``,
                                                 targeting ``eps - x0`` (the training forward)
``velocity_fn(cond, guidance)``                  ``(x, sigma) -> v`` for the maths modules
``rollout(cond, eps, num_steps, shift, guidance)``  no-grad Euler ODE from ``eps`` to ``x0`` with the
                                                 family's own guidance (true CFG: two forwards a step)
``decode(x0) -> images``                         differentiable, ``[B,3,H,W]`` in [0, 1]
``encode_images(images) -> x0``                  the posterior mode, in the policy's latent space
``latent_shape(H, W)``, ``pixel_multiple``       geometry of the unpacked latent
``pack(x)`` / ``unpack(tokens, h, w)``           the transformer's token layout and back
``block_classes``, ``lora_targets``              module classes to shard / checkpoint per block;
                                                 default LoRA target module names
``set_forward_module(module)``, ``forward_module``  the DDP/FSDP-wrapped transformer the velocity calls
``frozen_modules``, ``store_frozen_in(dtype)``   what is never trained (VAE, text encoders)
``autocast()``                                   the mixed-precision context of the policy's compute
``save_transformer(dir)``, ``save_lora(dir, ..)``  what the family's pipeline loads with
                                                 ``from_pretrained`` / ``load_lora_weights``
===============================================  =================================================

Guidance kinds (``guidance_kind``): ``"distilled"`` (a guidance value is an input of the model:
FLUX.1, FLUX.2 [dev]), ``"cfg"`` (true classifier-free guidance against ``negative_prompt``:
SD3.5, Qwen-Image, FLUX.2 [klein] base, Z-Image base; each rollout step costs two forwards) and
``"none"`` (guidance- or step-distilled: FLUX.2 [klein] distilled, Z-Image-Turbo with scale 0).
The training forward applies CFG only when ``cfg_in_training`` is set (off by default, as in the
SRPO authors' Qwen-Image script): ``velocity`` is then the conditional prediction alone.

Edit families (``edits_images``: FLUX.1 Kontext, Qwen-Image-Edit) condition each prompt on a source image too.
The source reaches the policy on the encode path, so velocity, rollout and every maths module are
unchanged: ``sources = policy.encode_sources(images [B,3,H,W] in [0, 1])`` once per source (no
grad; the trainer may store them with the rollout set like the text rows), then
``cond = policy.encode_prompts(instructions, sources)``; ``cond.repeat(n)`` repeats the sources
with the text. Text-to-image families refuse ``sources``. A family whose text rows depend on the
image (Qwen-Image-Edit's Qwen2.5-VL sees it) returns its own sources object holding the pixels
its text encoder needs too, and keys its prompt cache by (prompt, source).

The rollout schedule comes from the model folder's scheduler config (:func:`scheduler_sigmas`:
its shift, dynamic shifting by resolution, the pipeline's own base sigmas) unless a ``shift`` is
given, which gives the static shifted schedule :func:`srpo.schedules.sigma_schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, ClassVar, Optional, Sequence

import torch

from srpo.cache import PromptCache
from srpo.direct_align import euler_sample
from srpo.schedules import sigma_schedule

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"

#: The attention projections of a joint (MM-DiT) text-image block: image stream then text stream.
JOINT_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@dataclass
class TextCond:
    """Text conditioning of a batch: token states, their mask and a pooled vector (each optional but tokens).

    Every field is batch-first; :meth:`repeat` stacks the batch ``n`` times (for a model call on
    ``n`` stacked batches, e.g. the two Direct-Align branches).
    """

    tokens: torch.Tensor  # [B, L, D]  text token states
    mask: Optional[torch.Tensor] = None  # [B, L]  1 for real tokens, 0 for padding; None = all real
    pooled: Optional[torch.Tensor] = None  # [B, P]  pooled text vector (SD3's CLIPs)

    def repeat(self, n: int) -> "TextCond":
        """The batch ``n`` times over, [n*B, ...]."""
        return replace(self, **{f.name: _repeat_rows(getattr(self, f.name), n) for f in fields(self)})

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _repeat_rows(t: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    return None if t is None else t.repeat(n, *([1] * (t.ndim - 1)))


def stack_rows(rows: Sequence[tuple], with_mask: bool) -> TextCond:
    """Per-prompt ``(tokens [L_i, D], pooled [P] or None)`` rows -> a :class:`TextCond`, padded to the longest.

    ``with_mask``: keep a mask [B, L] of the real tokens (dropped when every token is real, as
    diffusers' Qwen-Image pipeline does); without it the rows must have equal lengths.
    """
    lengths = [r[0].shape[0] for r in rows]
    longest = max(lengths)
    if not with_mask and len(set(lengths)) > 1:
        raise ValueError(f"text rows of unequal lengths {sorted(set(lengths))} need a mask")
    tokens = torch.stack([torch.cat([r[0], r[0].new_zeros(longest - r[0].shape[0], r[0].shape[1])])
                          for r in rows])  # [B, L, D]
    mask = None
    if with_mask and min(lengths) < longest:
        mask = torch.stack([torch.arange(longest, device=tokens.device) < n for n in lengths]).long()  # [B, L]
    pooled = None if rows[0][1] is None else torch.stack([r[1] for r in rows])  # [B, P]
    return TextCond(tokens, mask, pooled)


def pack_text_rows(rows: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """Per-prompt ``(tokens [L_i, D], pooled [P] or None)`` rows -> ``tokens [N, L, D]``, ``lengths [N]``, ``pooled [N, P]``."""
    cond = stack_rows(rows, with_mask=True)
    out = {"tokens": cond.tokens.detach().cpu().contiguous(),
           "lengths": torch.tensor([r[0].shape[0] for r in rows], dtype=torch.long)}
    if cond.pooled is not None:
        out["pooled"] = cond.pooled.detach().cpu().contiguous()
    return out


def unpack_text_rows(stored: dict[str, torch.Tensor]) -> list[tuple]:
    """Inverse of :func:`pack_text_rows`: one ``(tokens [L_i, D], pooled [P] or None)`` row per prompt."""
    pooled = stored.get("pooled")
    return [(stored["tokens"][i, :int(n)], None if pooled is None else pooled[i])
            for i, n in enumerate(stored["lengths"].tolist())]


def calculate_shift(image_seq_len: int, config, default_max_shift: float = 1.15) -> float:
    """Diffusers' resolution-dependent ``mu``: linear in the image token count between the config's two anchors."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", default_max_shift)
    m = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * m + (base_shift - m * base_len)


def scheduler_sigmas(config, num_steps: int, mu: Optional[float] = None, base_sigmas: bool = True) -> torch.Tensor:
    """The ``num_steps + 1`` sigmas (last 0) a diffusers pipeline samples with, from its scheduler config.

    ``config``: the model folder's ``FlowMatchEulerDiscreteScheduler`` config (its shift, dynamic
    shifting, terminal shift...); ``mu``: the resolution-dependent shift where the config asks for
    dynamic shifting; ``base_sigmas``: pass ``linspace(1, 1/N, N)`` like the FLUX, Qwen-Image,
    FLUX.2 and Z-Image pipelines (SD3's lets the scheduler space its own timesteps).
    """
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    kwargs = {"mu": mu} if scheduler.config.use_dynamic_shifting or mu is not None else {}
    if base_sigmas and not scheduler.config.get("use_flow_sigmas", False):
        kwargs["sigmas"] = np.linspace(1.0, 1 / num_steps, num_steps)
    scheduler.set_timesteps(num_steps, device="cpu", **kwargs)
    return scheduler.sigmas.float()  # [N+1]


class Policy:
    """A diffusers text-to-image pipeline seen as a velocity field over unpacked latents.

    Only the transformer is trained; the VAE and text encoders are frozen and in eval mode.
    Subclasses (one per family) set the class attributes and implement :meth:`_encode_missing`,
    :meth:`_transformer_velocity`, :meth:`to_vae_latents` / :meth:`from_vae_latents` and the
    geometry; everything else is shared.
    """

    family: ClassVar[str]  # the name a config's ``policy.family`` uses
    pipeline_class: ClassVar[str]  # diffusers pipeline class name in model_index.json
    guidance_kind: ClassVar[str]  # "distilled" | "cfg" | "none"; see the module docstring
    lora_targets: ClassVar[tuple[str, ...]]  # default LoRA target module-name suffixes
    default_num_steps: ClassVar[int] = 28
    default_guidance: ClassVar[float] = 1.0
    default_max_shift: ClassVar[float] = 1.15  # the pipeline's fallback max_shift for dynamic shifting
    base_sigmas: ClassVar[bool] = True  # see scheduler_sigmas
    text_with_mask: ClassVar[bool] = False  # whether prompts keep their own lengths (a mask)
    edits_images: ClassVar[bool] = False  # whether each prompt is an instruction on a source image

    def __init__(self, pipe, device: str | torch.device = "cpu", autocast_dtype: torch.dtype | None = None,
                 negative_prompt: str = "", cfg_in_training: bool = False, max_cached_prompts: int = 256):
        self.pipe = pipe.to(device)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # cuDNN's fused attention (PyTorch 2.11, H200) gave non-finite gradients for joint
            # text-image attention and an illegal memory access at FLUX.1 size; flash and
            # memory-efficient attention are exact there. See docs/performance.md.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.autocast_dtype = autocast_dtype  # bf16 on GPU; None = full precision
        norms_in_input_dtype(pipe.transformer)
        for frozen in self.frozen_modules:
            frozen.requires_grad_(False).eval()
        self.prompt_cache = PromptCache(max_cached_prompts)  # prompt -> per-prompt text rows
        self.negative_prompt = negative_prompt  # true CFG's negative prompt
        self.cfg_in_training = cfg_in_training  # apply true CFG in the training forward too (2 forwards)
        self._forward_module: torch.nn.Module | None = None
        self.frozen_dtype = pipe.transformer.dtype  # what untrained weights are kept in; load_policy sets it
        self.base_quantization = "none"  # policy.base_quantization; the trainer quantises under LoRA

    @classmethod
    def lora_targets_for(cls, transformer: torch.nn.Module) -> tuple[str, ...]:
        """The family's default LoRA targets for ``transformer`` (read before any policy exists: the
        checks on the meta device); a family whose targets depend on the architecture overrides it."""
        return tuple(cls.lora_targets)

    # ---- parts and precision --------------------------------------------------------------
    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def forward_module(self) -> torch.nn.Module:
        """What the velocity calls: the trainer's DDP/FSDP-wrapped transformer, else the transformer."""
        return self._forward_module if self._forward_module is not None else self.transformer

    def set_forward_module(self, module: torch.nn.Module | None) -> None:
        """Route the velocity through ``module`` (the wrapped transformer); ``None`` = the plain transformer."""
        self._forward_module = module

    @property
    def block_classes(self) -> tuple[str, ...]:
        """Class names of the transformer's repeated blocks (what FSDP shards and checkpointing wraps)."""
        return tuple(self.transformer._no_split_modules)

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """The pipeline's text encoders, in component order."""
        return [m for name, m in self.pipe.components.items()
                if name.startswith("text_encoder") and isinstance(m, torch.nn.Module)]

    @property
    def frozen_modules(self) -> list[torch.nn.Module]:
        """The modules that are never trained: the VAE and the text encoders."""
        return [self.pipe.vae, *self.text_encoders]

    def store_frozen_in(self, dtype: torch.dtype) -> None:
        """Keep the frozen modules' weights in ``dtype`` (bf16 halves their memory; autocast computes in bf16 anyway)."""
        for module in self.frozen_modules:
            cast_parameters(module, dtype)

    def autocast(self):
        """The mixed-precision context of this policy's compute (transformer, VAE decode, the reward tower)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per VAE latent cell along a side."""
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def patch_size(self) -> int:
        """Unpacked-latent cells per transformer token along a side (the 2x2 packing or the patch embedding)."""
        return 2

    @property
    def latent_channels(self) -> int:
        """C of the unpacked latent ``x [B, C, h, w]``."""
        return self.pipe.vae.config.latent_channels

    @property
    def latent_factor(self) -> int:
        """Pixels per cell of the unpacked latent along a side (the VAE's factor unless the family patchifies)."""
        return self.vae_scale_factor

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this (latent factor x patch size: 16 for every family here)."""
        return self.latent_factor * self.patch_size

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the unpacked latent of an image of ``height`` x ``width`` pixels."""
        m = self.pixel_multiple
        if height % m or width % m:
            raise ValueError(f"height and width must be multiples of {m} for this model, got "
                             f"{height}x{width}: round them to a multiple of {m}")
        f = self.latent_factor
        return self.latent_channels, height // f, width // f

    def image_seq_len(self, h: int, w: int) -> int:
        """Image tokens the transformer sees for an unpacked latent of ``h`` x ``w`` cells."""
        return (h // self.patch_size) * (w // self.patch_size)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> the transformer's token layout (identity unless the family packs)."""
        return x

    def unpack(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Inverse of :meth:`pack`."""
        return tokens

    # ---- text -----------------------------------------------------------------------------
    @property
    def max_cached_prompts(self) -> int:
        return self.prompt_cache.max_items

    @max_cached_prompts.setter
    def max_cached_prompts(self, n: int) -> None:
        self.prompt_cache.max_items = int(n)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], sources=None) -> TextCond:
        """Text conditioning for ``prompts``; the prompts not in the cache are encoded together.

        ``sources``: an edit family's per-prompt source conditioning (:meth:`encode_sources`).
        """
        rows = self.prompt_cache.lookup(list(prompts), self._encode_with_encoders)
        cond = stack_rows(rows, self.text_with_mask)
        return cond if sources is None else self.attach_sources(cond, sources)

    def source_pixels(self, image) -> torch.Tensor:
        """A PIL source image as the family's pipeline resizes it for its VAE: [3, H, W] in [0, 1] (edit families)."""
        return self.attach_sources(None, image)  # text-to-image families: the clear refusal

    def _pipeline_pixels(self, image, height: int, width: int) -> torch.Tensor:
        """``image`` through the pipeline's own image processor at ``height`` x ``width``: [3, H, W] in [0, 1]."""
        processor = self.pipe.image_processor
        pixels = processor.preprocess(processor.resize(image, height, width), height, width)  # [1, 3, H, W] in [-1, 1]
        return (pixels[0].float() / 2 + 0.5).clamp(0, 1)

    def encode_sources(self, images: torch.Tensor):
        """Source images [B,3,H,W] in [0, 1] -> what an edit family conditions on (see :meth:`attach_sources`)."""
        return self.attach_sources(None, images)  # text-to-image families: the clear refusal

    def attach_sources(self, cond, sources):
        """``cond`` with an edit family's source conditioning ``sources`` (text-to-image families: an error)."""
        raise ValueError(f"policy.family {self.family!r} is a text-to-image model and takes no source image: "
                         "use an edit family (flux-kontext, qwen-image-edit, qwen-image-edit-plus) to train on "
                         "(source image, instruction) pairs, or give prompts without source images")

    def _encode_with_encoders(self, prompts: list[str]) -> list[tuple]:
        if not self.text_encoders:
            raise RuntimeError(f"prompt {prompts[0]!r} has no stored conditioning and this policy was loaded without "
                               "its text encoders: store the conditioning with the rollout set (generate_rollouts "
                               "does) or load the policy with text_encoders=True")
        return self._encode_missing(prompts)

    # ---- stored conditioning (text encoders out of the training process) ------------------
    @torch.no_grad()
    def stored_conditioning(self, prompts: Sequence[str], sources=None) -> dict[str, torch.Tensor]:
        """The per-prompt text rows of ``prompts`` as tensors to store with a rollout set (``sources``: an edit
        family's, which only a family whose text encoder reads the source uses).

        ``tokens [N, L, D]`` (padded), ``lengths [N]`` and ``pooled [N, P]`` where the family has
        one; true-CFG families add the negative prompt's row under ``negative.``.
        """
        out = pack_text_rows(self.prompt_cache.lookup(list(prompts), self._encode_with_encoders))
        if self.guidance_kind == "cfg":
            negative = pack_text_rows(self.prompt_cache.lookup([self.negative_prompt], self._encode_with_encoders))
            out.update({f"negative.{k}": v for k, v in negative.items()})
        return out

    def use_stored_conditioning(self, prompts: Sequence[str], stored: dict[str, torch.Tensor] | None,
                                sources=None) -> None:
        """Put ``stored`` rows (from :meth:`stored_conditioning`, one per prompt) into the prompt cache, so that
        :meth:`encode_prompts` finds ``prompts`` (and the negative prompt) without the text encoders."""
        if not stored:
            return
        rows = dict(zip(prompts, unpack_text_rows(stored)))
        if "negative.tokens" in stored:
            rows[self.negative_prompt] = unpack_text_rows(
                {k.removeprefix("negative."): v for k, v in stored.items() if k.startswith("negative.")})[0]
        self.prompt_cache.lookup(list(rows), lambda missing: [rows[p] for p in missing])

    def _encode_missing(self, prompts: list[str]) -> list[tuple]:
        """One ``(tokens [L_i, D], pooled [P] or None)`` row per prompt, encoded in one batch."""
        raise NotImplementedError

    def negative_cond(self, batch_size: int) -> TextCond:
        """The negative prompt's conditioning, ``batch_size`` times (cached like any prompt)."""
        return self.encode_prompts([self.negative_prompt]).repeat(batch_size)

    def negative_for(self, cond) -> TextCond:
        """True CFG's negative conditioning for the batch of ``cond`` (an edit family's sees the same sources)."""
        return self.negative_cond(cond.tokens.shape[0])

    # ---- the velocity field ---------------------------------------------------------------
    def _transformer_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: float) -> torch.Tensor:
        """One forward of :attr:`forward_module`: ``x [B,C,h,w]``, ``sigma [B]`` -> ``v [B,C,h,w]`` (``eps - x0``)."""
        raise NotImplementedError

    def guidance_input(self, x: torch.Tensor, guidance: float) -> torch.Tensor | None:
        """The distilled guidance value as the transformer's input, [B] fp32; ``None`` when it has no guidance embedding."""
        if not self.transformer.config.get("guidance_embeds", False):
            return None
        return torch.full((x.shape[0],), float(guidance), device=x.device, dtype=torch.float32)

    def transformer_forward(self, **inputs) -> torch.Tensor:
        """One call of :attr:`forward_module` under :meth:`autocast` with keyword ``inputs``: its first output."""
        with self.autocast():
            return self.forward_module(**inputs, return_dict=False)[0]

    def uses_cfg(self, guidance: float) -> bool:
        """Whether ``guidance`` means true classifier-free guidance (two forwards) for this model."""
        return self.guidance_kind == "cfg" and guidance > 1.0

    def combine_cfg(self, cond_v: torch.Tensor, uncond_v: torch.Tensor, guidance: float) -> torch.Tensor:
        """True CFG's combination of the conditional and negative velocities [B,C,h,w]."""
        return uncond_v + guidance * (cond_v - uncond_v)

    def guided_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: float) -> torch.Tensor:
        """The velocity with the family's guidance: true CFG (two forwards) where it applies."""
        v = self._transformer_velocity(x, sigma, cond, guidance)
        if not self.uses_cfg(guidance):
            return v
        negative = self.negative_for(cond)
        return self.combine_cfg(v, self._transformer_velocity(x, sigma, negative, guidance), guidance)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond, guidance: float) -> torch.Tensor:
        """``v_theta(x [B,C,h,w], sigma [B], c)`` -> [B,C,h,w], targeting ``eps - x0`` (the training forward).

        True CFG applies here only when ``cfg_in_training`` is set.
        """
        if self.cfg_in_training:
            return self.guided_velocity(x, sigma, cond, guidance)
        return self._transformer_velocity(x, sigma, cond, guidance)

    def velocity_fn(self, cond, guidance: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``velocity`` with the conditioning bound: the ``(x, sigma) -> v`` that maths code takes."""
        return lambda x, sigma: self.velocity(x, sigma, cond, guidance)

    def rollout_sigmas(self, num_steps: int | None, shift: float | None, h: int, w: int) -> torch.Tensor:
        """The rollout's ``num_steps + 1`` sigmas: the static ``shift`` if given, else the scheduler config's."""
        num_steps = num_steps or self.default_num_steps
        if shift is not None:
            return sigma_schedule(num_steps, shift)
        return scheduler_sigmas(self.pipe.scheduler.config, num_steps, self.schedule_mu(h, w, num_steps),
                                self.base_sigmas)

    def schedule_mu(self, h: int, w: int, num_steps: int) -> float | None:
        """The resolution-dependent shift ``mu`` the pipeline computes for dynamic shifting."""
        return calculate_shift(self.image_seq_len(h, w), self.pipe.scheduler.config, self.default_max_shift)

    @torch.no_grad()
    def rollout(self, cond, eps: torch.Tensor, num_steps: int | None = None, shift: float | None = None,
                guidance: float | None = None) -> torch.Tensor:
        """Deterministic Euler ODE from ``eps`` (sigma 1) to a clean latent x0, no grad, with the family's guidance.

        ``None`` settings take the model's: its scheduler config's schedule, the family's step
        count and guidance. The model runs in eval mode (no LoRA dropout); its mode is restored.
        """
        guidance = self.default_guidance if guidance is None else guidance
        model = self.forward_module
        was_training = model.training
        sigmas = self.rollout_sigmas(num_steps, shift, eps.shape[-2], eps.shape[-1]).to(eps.device)
        try:
            model.eval()
            return euler_sample(lambda x, s: self.guided_velocity(x, s, cond, guidance), eps, sigmas)
        finally:
            model.train(was_training)

    # ---- pixels <-> latents ---------------------------------------------------------------
    def to_vae_latents(self, x0: torch.Tensor) -> torch.Tensor:
        """Our latent [B,C,h,w] -> what the VAE decodes (undo the family's normalisation and patching)."""
        cfg = self.pipe.vae.config
        return x0 / cfg.scaling_factor + (cfg.shift_factor or 0.0)

    def from_vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_vae_latents`."""
        cfg = self.pipe.vae.config
        return (z - (cfg.shift_factor or 0.0)) * cfg.scaling_factor

    def _vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.decode(z, return_dict=False)[0]

    def _vae_encode_mode(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.encode(images).latent_dist.mode()

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents [B,C,h,w] -> images [B,3,H,W] in [0, 1], differentiable."""
        z = self.to_vae_latents(x0)
        with self.autocast():
            images = self._vae_decode(z.to(self.pipe.vae.dtype))  # [-1, 1]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,H,W] in [0, 1] -> latents [B,C,h,w] (the posterior mode: the same image, the same latent)."""
        z = self._vae_encode_mode((images * 2 - 1).to(self.pipe.vae.dtype))
        return self.from_vae_latents(z.float()).float()

    # ---- speed ----------------------------------------------------------------------------
    def compile_blocks(self, mode: str = "default", backend: str = "inductor") -> None:
        """``torch.compile`` each of the transformer's repeated blocks (diffusers' regional compilation).

        It composes with LoRA, per-block gradient checkpointing and DDP/FSDP wrapping, which all
        act on or around whole blocks. Shapes are static: a new batch size or resolution compiles again.
        """
        kwargs = dict(fullgraph=False, dynamic=False, backend=backend, mode=None if mode == "default" else mode)
        blocks = [m for m in self.transformer.modules() if type(m).__name__ in self.block_classes]
        for block in blocks:  # diffusers' compile_repeated_blocks, also for models without _repeated_blocks (SD3)
            block.compile(**kwargs)
        if not blocks:
            raise ValueError(f"policy.compile: no block of classes {self.block_classes} in the transformer to "
                             "compile; turn compile off for this model")

    # ---- saving ---------------------------------------------------------------------------
    def save_transformer(self, out_dir: str | Path) -> Path:
        """The (tuned) transformer as a diffusers folder with safetensors weights (``from_pretrained`` loads it)."""
        self.transformer.save_pretrained(out_dir, safe_serialization=True)
        return Path(out_dir)

    def save_lora(self, out_dir: str | Path, adapter_state: dict, adapter_config: dict) -> Path:
        """Write a LoRA adapter (peft key names, no ``transformer.`` prefix) as the family's pipeline saves it.

        ``adapter_config``: the peft config as a dict (rank, alpha, targets) into the file's
        metadata; without it diffusers reloads the adapter with alpha = rank. The family's
        pipeline loads the folder with ``load_lora_weights``.
        """
        out_dir = Path(out_dir)
        type(self.pipe).save_lora_weights(out_dir, transformer_lora_layers=adapter_state,
                                          transformer_lora_adapter_metadata=adapter_config,
                                          safe_serialization=True)
        return out_dir

    def load_lora(self, folder: str | Path) -> None:
        """Apply a LoRA adapter folder (``pytorch_lora_weights.safetensors``) with the pipeline's ``load_lora_weights``."""
        self.pipe.load_lora_weights(str(folder))


class InputDtypeRMSNorm(torch.nn.RMSNorm):
    """``nn.RMSNorm`` that scales by its weight cast to the input's dtype.

    FLUX's query/key norms see bf16 activations under autocast; with fp32 weights (full
    fine-tuning's master copy) PyTorch cannot use its fused kernel, warns "Mismatch dtype between
    input and weight" and runs the composite ops. Casting the weight (its gradient flows back in
    fp32) keeps the fused kernel; with equal dtypes this is exactly ``nn.RMSNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return torch.nn.functional.rms_norm(x, self.normalized_shape, weight, self.eps)


def norms_in_input_dtype(module: torch.nn.Module) -> int:
    """Make every ``nn.RMSNorm`` in ``module`` an :class:`InputDtypeRMSNorm` in place; how many.

    Only the class changes: parameters, state-dict keys and saved folders stay the same.
    """
    norms = [m for m in module.modules() if type(m) is torch.nn.RMSNorm]
    for norm in norms:
        norm.__class__ = InputDtypeRMSNorm
    return len(norms)


def cast_parameters(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store ``module``'s floating-point parameters in ``dtype``, in place (buffers are left alone)."""
    for param in module.parameters():
        if param.is_floating_point():
            param.data = param.data.to(dtype)
