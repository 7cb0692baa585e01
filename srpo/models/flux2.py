"""FLUX.2 [dev] and [klein] through diffusers' ``Flux2Pipeline`` / ``Flux2KleinPipeline`` (interface: :mod:`srpo.models.base`).

FLUX.2's VAE (``AutoencoderKLFlux2``) latents are patchified 2x2 into 4C channels and normalised
by the VAE's batch-norm statistics before the transformer sees them, one token per cell. Our
latent ``x [B, 4C, H/16, W/16]`` is that patchified, normalised latent; ``to_vae_latents`` undoes
both. Text: stacked hidden states of Mistral3 ([dev], layers 10, 20, 30) or Qwen3 ([klein],
layers 9, 18, 27). [dev] takes a distilled guidance value; [klein] base uses true CFG against an
empty prompt, [klein] distilled (``is_distilled`` in the pipeline config) no guidance in 4 steps.
"""

from __future__ import annotations

import torch

from srpo.models.base import JOINT_ATTENTION_TARGETS, Policy, TextCond


def pack_cells(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C]: one token per latent cell."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).permute(0, 2, 1)


def unpack_cells(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, h*w, C] -> [B, C, h, w] (inverse of :func:`pack_cells`)."""
    b, _, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


class Flux2Policy(Policy):
    family = "flux2"
    pipeline_class = "Flux2Pipeline"
    guidance_kind = "distilled"
    default_num_steps = 50
    default_guidance = 4.0
    text_layers = (10, 20, 30)  # Mistral3 hidden states the pipeline stacks

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return self.lora_targets_for(self.transformer)

    @classmethod
    def lora_targets_for(cls, transformer: torch.nn.Module) -> tuple[str, ...]:
        """Double blocks' attention and MLPs; single blocks' fused QKV+MLP input and their (plain Linear) output."""
        singles = tuple(f"single_transformer_blocks.{i}.attn.to_out"
                        for i in range(len(transformer.single_transformer_blocks)))
        return (*JOINT_ATTENTION_TARGETS, "ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out",
                "to_qkv_mlp_proj", *singles)

    @property
    def patch_size(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        return 4 * self.pipe.vae.config.latent_channels

    @property
    def latent_factor(self) -> int:
        return 2 * self.vae_scale_factor

    @property
    def max_sequence_length(self) -> int:
        tokenizer = getattr(self.pipe.tokenizer, "tokenizer", self.pipe.tokenizer)  # [dev]: a processor
        return min(512, tokenizer.model_max_length)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return pack_cells(x)

    def unpack(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return unpack_cells(tokens, h, w)

    def schedule_mu(self, h: int, w: int, num_steps: int) -> float:
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        return compute_empirical_mu(image_seq_len=self.image_seq_len(h, w), num_steps=num_steps)

    def _encode_missing(self, prompts: list[str]) -> list[tuple]:
        embeds, _ = self.pipe.encode_prompt(prompts, device=self.device, max_sequence_length=self.max_sequence_length,
                                            text_encoder_out_layers=self.text_layers)
        return [(e, None) for e in embeds]

    def _transformer_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: TextCond,
                              guidance: float) -> torch.Tensor:
        h, w = x.shape[-2:]
        pipe = type(self.pipe)
        out = self.transformer_forward(
            hidden_states=pack_cells(x),
            timestep=sigma.to(x.dtype),  # the pipeline passes t / 1000 = sigma
            guidance=self.guidance_input(x, guidance),
            encoder_hidden_states=cond.tokens,
            txt_ids=pipe._prepare_text_ids(cond.tokens).to(x.device),  # [B, L, 4]
            img_ids=pipe._prepare_latent_ids(x).to(x.device))  # [B, h*w, 4]
        return unpack_cells(out.to(x.dtype), h, w)

    def _bn_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn, eps = self.pipe.vae.bn, self.pipe.vae.config.batch_norm_eps
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps).to(like.device, like.dtype)
        return mean, std

    def to_vae_latents(self, x0: torch.Tensor) -> torch.Tensor:
        mean, std = self._bn_stats(x0)
        return type(self.pipe)._unpatchify_latents(x0 * std + mean)  # [B, C, H/8, W/8]

    def from_vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        x = type(self.pipe)._patchify_latents(z)  # [B, 4C, H/16, W/16]
        mean, std = self._bn_stats(x)
        return (x - mean) / std


class Flux2KleinPolicy(Flux2Policy):
    family = "flux2-klein"
    pipeline_class = "Flux2KleinPipeline"
    text_layers = (9, 18, 27)  # Qwen3 hidden states the pipeline stacks

    @property
    def distilled(self) -> bool:
        return bool(self.pipe.config.get("is_distilled", False))

    @property
    def guidance_kind(self) -> str:
        return "none" if self.distilled else "cfg"

    @property
    def default_num_steps(self) -> int:
        return 4 if self.distilled else 50

    @property
    def default_guidance(self) -> float:
        return 1.0 if self.distilled else 4.0
