"""Reading a trained transformer (full or LoRA) and fusing a LoRA into its base weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from srpo.export.layouts import lora_delta, module_scales, peft_modules

#: Where diffusers' ``save_lora_weights`` puts peft's config in the file's metadata (``LORA_ADAPTER_METADATA_KEY``):
#: one JSON object whose keys carry the component's prefix (``"transformer.lora_alpha"``); ``load_lora_weights``
#: reads it back, else it loads with alpha = rank.
LORA_CONFIG_METADATA = "lora_adapter_metadata"
LORA_PREFIX = "transformer."


def lora_config_metadata(config: Mapping) -> dict[str, str]:
    """The safetensors metadata entry that carries a transformer LoRA's peft ``config`` as diffusers writes it."""
    return {LORA_CONFIG_METADATA: json.dumps({LORA_PREFIX + k: v for k, v in config.items()}, indent=2,
                                             sort_keys=True)}


def lora_config_from_metadata(meta: Mapping[str, str]) -> dict | None:
    """The transformer's peft config from a LoRA file's metadata (:func:`lora_config_metadata`), or None."""
    if LORA_CONFIG_METADATA not in meta:
        return None
    packed = json.loads(meta[LORA_CONFIG_METADATA])
    return {k.removeprefix(LORA_PREFIX): v for k, v in packed.items() if k.startswith(LORA_PREFIX)} or None


def read_lora(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``(state dict, adapter config)`` of a LoRA folder training wrote (``pytorch_lora_weights.safetensors``)."""
    from safetensors import safe_open

    from srpo.models.base import LORA_WEIGHTS

    path = Path(folder) / LORA_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"LoRA folder {str(folder)!r} has no {LORA_WEIGHTS}: export a LoRA that training saved")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    return state, lora_config_from_metadata(meta)


def read_transformer(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every weight of a diffusers model folder (``*.safetensors``, sharded or not), by diffusers key."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{str(folder)!r} holds no *.safetensors: it must be a diffusers model folder "
                                "(save_pretrained with safe_serialization)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def merge_lora(base: Mapping[str, torch.Tensor], lora: Mapping[str, torch.Tensor],
               adapter_config: Mapping | None) -> dict[str, torch.Tensor]:
    """``W + (alpha / r) * B @ A`` for every LoRA module, in the base weight's dtype; other weights as they are.

    Raises:
        ValueError: a LoRA module has no weight in ``base`` or its shape disagrees (another base model).
    """
    modules = peft_modules(lora)
    scales = module_scales(modules, adapter_config)
    merged = dict(base)
    for module, (a, b) in modules.items():
        key = f"{module}.weight"
        if key not in base:
            raise ValueError(f"LoRA module {module!r} has no weight in the base transformer: the LoRA was trained "
                             "on another model (check policy.pretrained)")
        w = base[key]
        if tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise ValueError(f"LoRA module {module!r} is [{b.shape[0]}, {a.shape[1]}] but the base weight is "
                             f"{list(w.shape)}: the LoRA was trained on another model (check policy.pretrained)")
        merged[key] = (w.float() + lora_delta(a, b, scales[module])).to(w.dtype)
    return merged
