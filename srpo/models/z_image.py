"""Z-Image through diffusers' ``ZImagePipeline`` (interface: :mod:`srpo.models.base`).

Z-Image's single-stream transformer takes lists: one latent ``[C, 1, h, w]`` and one unpadded
text sequence (a Qwen3 model's second-to-last states) per sample, a time ``1 - sigma``, and
predicts ``x0 - eps`` (the pipeline negates it). Its guidance is ``pos + s (pos - neg)``, on only
when ``s > 0``: Z-Image-Turbo samples in a few steps with ``s = 0`` (one forward a step).
"""

from __future__ import annotations

import torch

from srpo.models.base import Policy, TextCond


class ZImagePolicy(Policy):
    family = "z-image"
    pipeline_class = "ZImagePipeline"
    guidance_kind = "cfg"
    lora_targets = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                    "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
    default_num_steps = 50
    default_guidance = 5.0  # the pipeline's default; Z-Image-Turbo: 0 (off) with 8-9 steps
    text_with_mask = True

    @property
    def max_sequence_length(self) -> int:
        return min(512, self.pipe.tokenizer.model_max_length)

    def _encode_missing(self, prompts: list[str]) -> list[tuple]:
        # the pipeline writes the chat template into the list it is given: give it a copy
        embeds, _ = self.pipe.encode_prompt(list(prompts), device=self.device, do_classifier_free_guidance=False,
                                            max_sequence_length=self.max_sequence_length)
        return [(e, None) for e in embeds]

    def uses_cfg(self, guidance: float) -> bool:
        return guidance > 0.0

    def combine_cfg(self, cond_v: torch.Tensor, uncond_v: torch.Tensor, guidance: float) -> torch.Tensor:
        return cond_v + guidance * (cond_v - uncond_v)

    def _transformer_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: TextCond,
                              guidance: float) -> torch.Tensor:
        lengths = [cond.tokens.shape[1]] * len(cond) if cond.mask is None else cond.mask.sum(1).tolist()
        captions = [t[:n] for t, n in zip(cond.tokens, lengths)]  # B x [L_i, D]
        with self.autocast():
            out = self.forward_module(
                list(x.unsqueeze(2).unbind(0)),  # B x [C, 1, h, w]
                (1 - sigma).to(x.dtype),  # Z-Image's time runs from 0 (noise) to 1 (clean)
                captions,
                return_dict=False,
            )[0]
        return -torch.stack(out).squeeze(2).to(x.dtype)  # the model predicts x0 - eps
