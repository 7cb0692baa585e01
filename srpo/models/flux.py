"""FLUX through diffusers: the policy the trainer optimises.

The adapter hides FLUX's packing (2x2 latent patches become tokens), its text encoders (CLIP
pooled + T5 sequence) and its distilled guidance. Everything else in the library sees plain
latents ``x [B, C, h, w]`` and noise levels ``sigma [B]`` with ``v`` targeting ``eps - x0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from srpo.direct_align import euler_sample
from srpo.config import FLUX_LORA_TARGETS
from srpo.io import resolve_model_location
from srpo.models.common import cast_parameters
from srpo.published import is_builtin, resolve_builtin
from srpo.schedules import sigma_schedule


@dataclass
class PromptEmbeds:
    """FLUX text conditioning for a batch."""

    tokens: torch.Tensor  # [B, L, D_t5]   T5 sequence
    pooled: torch.Tensor  # [B, D_clip]    CLIP pooled output
    text_ids: torch.Tensor  # [L, 3]       positional ids of the text tokens (zeros)

    def repeat(self, n: int) -> "PromptEmbeds":
        """The batch ``n`` times over, [n*B, ...] (for a model call on n stacked batches)."""
        return PromptEmbeds(self.tokens.repeat(n, 1, 1), self.pooled.repeat(n, 1), self.text_ids)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)*(w/2), 4C]: 2x2 patches become tokens."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, 2, 2]
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, (h/2)*(w/2), 4C] -> [B, C, h, w] (inverse of :func:`pack_latents`)."""
    b, _, c4 = tokens.shape
    x = tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C, h/2, 2, w/2, 2]
    return x.reshape(b, c4 // 4, h, w)


def latent_image_ids(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """FLUX's positional ids for the packed latent tokens: [(h/2)*(w/2), 3] = (0, row, col)."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)  # built in place: no host-to-device copy
    ids[..., 1] = torch.arange(h // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def load_flux_pipeline(location: str, transformer: str | None = None, torch_dtype=torch.float32):
    """``FluxPipeline.from_pretrained`` from a folder, an fsspec URL, a hub id or a built-in name.

    ``transformer`` optionally replaces the pipeline's transformer by a diffusers transformer
    folder, or adds a LoRA adapter folder (``pytorch_lora_weights.safetensors``): what training saves.
    """
    from diffusers import FluxPipeline, FluxTransformer2DModel

    if is_builtin(location):
        location = str(resolve_builtin("policy", location))
    source = resolve_model_location(location)
    kwargs, lora = {}, None
    if transformer is not None:
        tuned = resolve_model_location(transformer)
        if (Path(tuned) / LORA_WEIGHTS).exists():
            lora = tuned  # a LoRA adapter saved by the trainer: applied on top of the base transformer
        else:
            kwargs["transformer"] = FluxTransformer2DModel.from_pretrained(tuned, dtype=torch_dtype)
    try:
        pipe = FluxPipeline.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as err:
        raise OSError(f"could not load a FLUX pipeline from {location!r}: {err}. A local folder must "
                      "hold a diffusers layout (model_index.json, transformer/, vae/, text_encoder/, "
                      "text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/)") from err
    if lora is not None:
        pipe.load_lora_weights(lora)
    return pipe


class FluxPolicy:
    """A FLUX pipeline seen as a velocity field over unpacked latents.

    Only the transformer is trained; the VAE and text encoders are frozen and in eval mode.
    """

    #: The transformer's per-block classes: what FSDP shards (and a trainer checkpoints) one by one.
    block_classes: tuple[str, ...] = ("FluxTransformerBlock", "FluxSingleTransformerBlock")
    #: The default LoRA targets (module-name suffixes): attention and MLP projections of both block types.
    lora_targets: tuple[str, ...] = tuple(FLUX_LORA_TARGETS)

    def __init__(self, pipe, device: str | torch.device = "cpu", autocast_dtype: torch.dtype | None = None):
        self.pipe = pipe.to(device)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # cuDNN's fused attention (PyTorch 2.11, H200) gave non-finite gradients for FLUX's joint
            # text-image attention and an illegal memory access at FLUX.1 size; flash and
            # memory-efficient attention are exact there. See docs/performance.md.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.autocast_dtype = autocast_dtype  # bf16 on GPU; None = full precision
        norms_in_input_dtype(pipe.transformer)
        for frozen in self.frozen_modules:
            frozen.requires_grad_(False).eval()
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # prompt -> (T5 states, pooled)
        self.max_cached_prompts = 256
        self._forward_module: torch.nn.Module | None = None  # see set_forward_module
        self.frozen_dtype = pipe.transformer.dtype  # what untrained weights are kept in; load_policy sets it

    @classmethod
    def from_pretrained(cls, location: str, *, transformer: str | None = None, device="cpu",
                        torch_dtype=torch.float32, autocast_dtype=None) -> "FluxPolicy":
        return cls(load_flux_pipeline(location, transformer, torch_dtype), device, autocast_dtype)

    # ---- parts and precision --------------------------------------------------------------
    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def forward_module(self) -> torch.nn.Module:
        """What the velocity calls: the module given to :meth:`set_forward_module`, else the transformer."""
        return self._forward_module if self._forward_module is not None else self.transformer

    def set_forward_module(self, module: torch.nn.Module | None) -> None:
        """The module :meth:`velocity` calls: the trainer's DDP/FSDP-wrapped transformer (None: the bare one).

        It must wrap :attr:`transformer` (same parameters); the trainer calls this once, after setup.
        """
        self._forward_module = module

    @property
    def frozen_modules(self) -> list[torch.nn.Module]:
        """The modules that are never trained: the VAE and both text encoders."""
        return [self.pipe.vae, self.pipe.text_encoder, self.pipe.text_encoder_2]

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
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor x 2x2 packing: 16 for FLUX)."""
        return 2 * self.vae_scale_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the unpacked latent of an image of ``height`` x ``width`` pixels."""
        m = self.pixel_multiple
        if height % m or width % m:
            raise ValueError(f"height and width must be multiples of {m} for this model, got "
                             f"{height}x{width}: round them to a multiple of {m}")
        f = self.vae_scale_factor
        return self.pipe.vae.config.latent_channels, height // f, width // f

    # ---- text -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Text conditioning for ``prompts``; the prompts not in the cache are encoded together.

        The cache keeps the ``max_cached_prompts`` most recently used prompts (FLUX.1's T5 states
        are 4 MB a prompt in bf16: an unbounded cache would fill a GPU over a 3,200-prompt
        evaluation). A prompt's embedding is computed in the batch it is first met in.
        """
        unique = list(dict.fromkeys(prompts))
        for p in unique:
            if p in self._text_cache:
                self._text_cache[p] = self._text_cache.pop(p)  # most recently used last
        missing = [p for p in unique if p not in self._text_cache]
        if missing:
            max_len = min(512, self.pipe.tokenizer_2.model_max_length)
            tokens, pooled, _ = self.pipe.encode_prompt(missing, device=self.device, max_sequence_length=max_len)
            for p, t, q in zip(missing, tokens, pooled):
                self._text_cache[p] = (t, q)
        tokens = torch.stack([self._text_cache[p][0] for p in prompts])  # [B, L, D_t5]
        pooled = torch.stack([self._text_cache[p][1] for p in prompts])  # [B, D_clip]
        while len(self._text_cache) > max(self.max_cached_prompts, len(unique)):
            del self._text_cache[next(iter(self._text_cache))]  # least recently used
        text_ids = torch.zeros(tokens.shape[1], 3, device=self.device, dtype=tokens.dtype)
        return PromptEmbeds(tokens, pooled, text_ids)

    # ---- the velocity field ---------------------------------------------------------------
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: PromptEmbeds, guidance: float) -> torch.Tensor:
        """``v_theta(x [B,C,h,w], sigma [B], c)`` -> [B,C,h,w], targeting ``eps - x0``."""
        b, _, h, w = x.shape
        guidance_vec = None
        if self.transformer.config.guidance_embeds:
            guidance_vec = torch.full((b,), float(guidance), device=x.device, dtype=torch.float32)
        with self.autocast():
            out = self.forward_module(
                hidden_states=pack_latents(x),
                timestep=sigma.to(x.dtype),  # diffusers' FLUX multiplies by 1000 inside
                guidance=guidance_vec,
                pooled_projections=cond.pooled,
                encoder_hidden_states=cond.tokens,
                txt_ids=cond.text_ids,
                img_ids=latent_image_ids(h, w, x.device, x.dtype),
                return_dict=False,
            )[0]
        return unpack_latents(out.to(x.dtype), h, w)

    def velocity_fn(self, cond: PromptEmbeds, guidance: float):
        """``velocity`` with the conditioning bound: the ``(x, sigma) -> v`` that maths code takes."""
        return lambda x, sigma: self.velocity(x, sigma, cond, guidance)

    @torch.no_grad()
    def rollout(self, cond: PromptEmbeds, eps: torch.Tensor, num_steps: int = 25,
                shift: float = 3.0, guidance: float = 1.0) -> torch.Tensor:
        """Deterministic Euler ODE from ``eps`` (sigma 1) to a clean latent x0, no grad.

        The model runs in eval mode (no LoRA dropout) whatever mode it is in; that mode is restored.
        """
        model = self.forward_module
        was_training = model.training
        sigmas = sigma_schedule(num_steps, shift).to(eps.device)
        try:
            model.eval()
            return euler_sample(self.velocity_fn(cond, guidance), eps, sigmas)
        finally:
            model.train(was_training)

    # ---- pixels <-> latents ---------------------------------------------------------------
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents [B,C,h,w] -> images [B,3,H,W] in [0, 1], differentiable."""
        cfg = self.pipe.vae.config
        z = x0 / cfg.scaling_factor + cfg.shift_factor
        with self.autocast():
            images = self.pipe.vae.decode(z.to(self.pipe.vae.dtype), return_dict=False)[0]  # [-1, 1]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,H,W] in [0, 1] -> latents [B,C,h,w] scaled and shifted like FLUX's.

        Uses the posterior mode, so the same image always gives the same latent.
        """
        cfg = self.pipe.vae.config
        posterior = self.pipe.vae.encode((images * 2 - 1).to(self.pipe.vae.dtype)).latent_dist
        return ((posterior.mode() - cfg.shift_factor) * cfg.scaling_factor).float()

    # ---- speed ----------------------------------------------------------------------------
    def compile_blocks(self, mode: str = "default", backend: str = "inductor") -> None:
        """``torch.compile`` each of FLUX's repeated blocks (diffusers' regional compilation).

        Compiling the blocks rather than the whole model compiles one double and one single block
        once and reuses the code for all of them; it composes with LoRA, per-block gradient
        checkpointing and DDP/FSDP wrapping, which all act on or around whole blocks. Shapes are
        static: a new batch size or resolution compiles again (once).
        """
        self.transformer.compile_repeated_blocks(fullgraph=False, dynamic=False, backend=backend,
                                                 mode=None if mode == "default" else mode)

    def save_transformer(self, out_dir: str | Path) -> Path:
        """The (tuned) transformer as a diffusers folder with safetensors weights."""
        self.transformer.save_pretrained(out_dir, safe_serialization=True)
        return Path(out_dir)


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


def frozen_dtype(cfg) -> torch.dtype:
    """The dtype a ``PolicyConfig`` keeps untrained weights in: ``frozen_dtype``, else autocast's, else ``dtype``."""
    name = cfg.frozen_dtype or (cfg.autocast if cfg.autocast != "none" else cfg.dtype)
    return getattr(torch, name)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_policy(cfg, transformer: str | None = None, device: str | torch.device | None = None) -> FluxPolicy:
    """A :class:`FluxPolicy` from a ``PolicyConfig``; ``transformer`` / ``device`` override the config's."""
    device = torch.device(device) if device is not None else resolve_device(cfg.device)
    policy = FluxPolicy.from_pretrained(
        cfg.pretrained, transformer=transformer or cfg.transformer, device=device,
        torch_dtype=getattr(torch, cfg.dtype),
        autocast_dtype=torch.bfloat16 if cfg.autocast == "bfloat16" else None)
    return prepare_policy(policy, cfg)


def prepare_policy(policy: FluxPolicy, cfg) -> FluxPolicy:
    """Apply a ``PolicyConfig``'s resolution check, frozen dtype, checkpointing and compilation."""
    policy.latent_shape(cfg.height, cfg.width)  # validates the resolution against this VAE
    policy.frozen_dtype = frozen_dtype(cfg)
    policy.store_frozen_in(policy.frozen_dtype)
    if cfg.gradient_checkpointing:
        policy.transformer.enable_gradient_checkpointing()
    if cfg.compile:
        policy.compile_blocks(cfg.compile_mode, cfg.compile_backend)
    return policy
