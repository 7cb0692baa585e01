"""Helpers every policy uses, whatever its model family."""

from __future__ import annotations

import torch


def cast_parameters(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store ``module``'s floating-point parameters in ``dtype``, in place (buffers are left alone)."""
    for param in module.parameters():
        if param.is_floating_point():
            param.data = param.data.to(dtype)
