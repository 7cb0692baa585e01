"""Frozen base weights quantised under LoRA, through torchao (``policy.base_quantization``).

Only the transformer's ``nn.Linear`` weights are quantised, in place, before the LoRA adapter is
added: peft then wraps each quantised target as ``TorchaoLoraLinear`` (int8, fp8) or its plain
``Linear`` over an NF4 weight, the adapter's A/B stay in full precision and are the only
parameters with gradients. The saved adapter holds A/B alone (:func:`srpo.training.lora.save_lora`),
so it applies to the unquantised base as today.

======  ===============================================  ===========================================
kind    torchao                                          weight bytes per parameter
======  ===============================================  ===========================================
int8    ``Int8WeightOnlyConfig`` (per-row scales)        1 (+ one scale per output row)
fp8     ``Float8WeightOnlyConfig`` (e4m3, per-row)       1 (+ scales); CUDA needs compute >= 8.9
nf4     ``to_nf4`` (block 64, double-quantised scales)   0.5 (+ ~0.03 for the block scales)
======  ===============================================  ===========================================

All three run on the CPU here (torch 2.14.1, torchao 0.18.0); on a GPU the hardware check
:func:`check_quantization_device` refuses fp8 on cards older than Ada/Hopper before any model loads.
"""

from __future__ import annotations

import math

import torch

KINDS = ("none", "int8", "fp8", "nf4")
BYTES_PER_WEIGHT = {"none": None, "int8": 1.0 + 4 / 3072, "fp8": 1.0 + 4 / 3072, "nf4": 0.5 + 1 / 64 + 4 / 16384}
NF4_BLOCK = 64  # values per NF4 block (one scale each)
NF4_SCALER_BLOCK = 256  # block scales per double-quantisation block
FP8_MIN_CAPABILITY = (8, 9)


def _require_torchao(kind: str):
    try:
        import torchao  # noqa: F401
    except ImportError as err:
        raise ImportError(f"policy.base_quantization = {kind!r} needs torchao: pip install 'srpo[quant]' "
                          "(torchao==0.18.0), or set base_quantization: none") from err


def check_quantization_device(kind: str, device: torch.device | str) -> None:
    """Refuse a quantisation the device cannot run, before any model loads (first line: setting, value, fix)."""
    device = torch.device(device)
    if kind == "none":
        return
    _require_torchao(kind)
    if kind == "fp8" and device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            raise ValueError(f"policy.base_quantization = 'fp8' needs a GPU of compute capability >= 8.9 (Ada, "
                             f"Hopper or newer); this one has {capability[0]}.{capability[1]}: use int8 or nf4")


def quantizable_linears(module: torch.nn.Module, kind: str) -> list[tuple[str, torch.nn.Linear]]:
    """The ``nn.Linear`` layers of ``module`` whose weights ``kind`` can hold (NF4: whole blocks of 64)."""
    return [(name, m) for name, m in module.named_modules()
            if type(m) is torch.nn.Linear and (kind != "nf4" or m.weight.numel() % NF4_BLOCK == 0)]


def _nf4_scaler_block(weight: torch.Tensor) -> int:
    """NF4's double-quantisation block: 256 block scales, or the largest count dividing this weight's blocks."""
    return math.gcd(weight.numel() // NF4_BLOCK, NF4_SCALER_BLOCK)


def quantize_linears(module: torch.nn.Module, kind: str) -> int:
    """Quantise ``module``'s linear weights to ``kind`` in place (frozen, no gradient); how many layers."""
    if kind not in KINDS:
        raise ValueError(f"policy.base_quantization = {kind!r} is not known: use one of {list(KINDS)}")
    if kind == "none":
        return 0
    _require_torchao(kind)
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_, to_nf4

    layers = quantizable_linears(module, kind)
    names = {id(m) for _, m in layers}
    module.requires_grad_(False)
    if kind == "nf4":
        for _, layer in layers:
            layer.weight = torch.nn.Parameter(to_nf4(layer.weight.data, NF4_BLOCK, _nf4_scaler_block(layer.weight)),
                                              requires_grad=False)
    else:
        config = Int8WeightOnlyConfig() if kind == "int8" else Float8WeightOnlyConfig()
        quantize_(module, config, filter_fn=lambda m, _name: id(m) in names)
    return len(layers)


def quantize_frozen_base(policy, finetune: str) -> int:
    """The trainer's one call: quantise the policy's transformer to ``policy.base_quantization`` before LoRA.

    Refuses full fine-tuning (its weights are trained, so they cannot be stored quantised).
    """
    kind = getattr(policy, "base_quantization", "none")
    if kind == "none":
        return 0
    if finetune != "lora":
        raise ValueError(f"policy.base_quantization = {kind!r} with train.finetune = {finetune!r}: quantised base "
                         "weights cannot be trained; set train.finetune: lora or base_quantization: none")
    check_quantization_device(kind, policy.device)
    return quantize_linears(policy.transformer, kind)


def dense(weight: torch.Tensor) -> torch.Tensor:
    """A (possibly quantised) weight as a plain fp32 tensor: what it computes with."""
    from torchao.quantization import NF4Tensor

    if isinstance(weight, NF4Tensor):
        return weight.get_original_weight().to(torch.float32)
    if hasattr(weight, "dequantize"):
        return weight.dequantize().to(torch.float32)
    return weight.to(torch.float32)
