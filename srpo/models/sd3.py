"""Stable Diffusion 3 / 3.5 through diffusers' ``StableDiffusion3Pipeline`` (interface: :mod:`srpo.models.base`).

SD3 embeds latent patches itself (no packing: the transformer takes ``x [B, C, h, w]``),
conditions on CLIP-L + CLIP-G penultimate states concatenated with T5's (and the two CLIPs'
pooled vectors), takes timesteps in [0, 1000] and uses true classifier-free guidance.
"""

from __future__ import annotations

import torch

from srpo.models.base import JOINT_ATTENTION_TARGETS, Policy, TextCond


class SD3Policy(Policy):
    """SD3 / SD3.5: unpacked latents into the transformer's own patch embedding, true CFG, timesteps in [0, 1000]."""

    family = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    guidance_kind = "cfg"
    default_guidance = 7.0  # the pipeline's guidance_scale
    base_sigmas = False  # the SD3 pipeline lets the scheduler space its timesteps
    default_max_shift = 1.16
    lora_targets = (*JOINT_ATTENTION_TARGETS, "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
    default_num_steps = 28

    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size

    @property
    def max_sequence_length(self) -> int:
        return min(256, self.pipe.tokenizer_3.model_max_length)  # the pipeline's default, capped by T5's tokenizer

    def _encode_missing(self, prompts: list[str]) -> list[tuple]:
        tokens, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length)
        return list(zip(tokens, pooled))  # ([77 + L_t5, D], [P]) per prompt

    def _transformer_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: TextCond,
                              guidance: float) -> torch.Tensor:
        out = self.transformer_forward(
            hidden_states=x,
            timestep=sigma.to(x.dtype) * 1000,  # SD3 takes the scheduler's timesteps
            encoder_hidden_states=cond.tokens,
            pooled_projections=cond.pooled)
        return out.to(x.dtype)
