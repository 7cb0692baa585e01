"""LoRA on a policy's transformer through peft, saved in the format the family's diffusers pipeline loads.

``<FamilyPipeline>.load_lora_weights(folder)`` reads what :func:`save_lora` writes
(``pytorch_lora_weights.safetensors`` with ``transformer.``-prefixed peft keys).
"""

from __future__ import annotations

from pathlib import Path

import torch


def add_lora(transformer: torch.nn.Module, rank: int, alpha: float, targets: list[str], dropout: float = 0.0,
             seed: int = 0) -> list[torch.nn.Parameter]:
    """Freeze ``transformer``, add a LoRA adapter on ``targets``; returns the trainable parameters.

    peft initialises B to zero, so the adapted model starts equal to the base model; A is drawn
    from a generator seeded by ``seed`` so that runs are reproducible.
    """
    from peft import LoraConfig

    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        init_lora_weights=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        transformer.add_adapter(config)
    except ValueError as err:
        raise ValueError(f"could not add LoRA on targets {targets}: {err}. Targets are module-name suffixes "
                         "of the transformer's module names (see the family's policy.lora_targets)") from err
    finally:
        torch.random.set_rng_state(state)
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    if not params:
        raise ValueError(f"LoRA targets {targets} matched no module of the transformer")
    return params


def lora_state_dict(transformer: torch.nn.Module, state: dict | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's key names (no base weights).

    ``state``: the transformer's full state dict when its own holds shards (FSDP).
    """
    from peft.utils import get_peft_model_state_dict

    adapter = get_peft_model_state_dict(transformer, state_dict=state)
    return {k: v.detach().cpu().contiguous() for k, v in adapter.items()}


def save_lora(policy, transformer: torch.nn.Module, out_dir: str | Path, state: dict | None = None) -> Path:
    """Write ``transformer``'s adapter as ``pytorch_lora_weights.safetensors``, as ``policy``'s family saves it.

    The adapter's config (rank, alpha, targets) goes into the file's metadata: without it
    diffusers reloads the adapter with alpha = rank, i.e. at the wrong scale whenever they differ.
    The family's pipeline loads the folder with ``load_lora_weights``.
    """
    return policy.save_lora(out_dir, lora_state_dict(transformer, state), transformer.peft_config["default"].to_dict())
