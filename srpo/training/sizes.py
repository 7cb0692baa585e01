"""Refuse batch sizes a run cannot meet, before any model is loaded.

Two checks, both cheap (configs and the rollout count only):

- :func:`check_batch_size`: a process's batch (``train.batch_size``) must not exceed the rollout
  set, whose samples it draws without repeats within an epoch;
- :func:`check_batch_memory`: a lower bound on what one micro-step keeps for its backward must fit
  the machine. The bound counts only the decoded images and their gradients, in fp32:
  ``batch_size x branches per micro-step x 3 x height x width x 4 bytes x 2`` (branches: 2 with
  ``fuse_branches``, else 1), times the processes sharing the memory (all of them on a CPU, one per
  GPU). The VAE decoder's activations, the reward tower and the weights come on top, so a size this
  refuses cannot run; one it passes may still not fit (it only refuses clearly impossible sizes).
"""

from __future__ import annotations

import os

import torch

#: Bytes per output pixel a sample's micro-step holds at the least: the decoded RGB image and its gradient, fp32.
IMAGE_BYTES_PER_PIXEL = 3 * 4 * 2


def check_batch_size(train, num_rollouts: int) -> None:
    """Refuse ``train.batch_size`` above the number of rollouts each update draws from."""
    if train.batch_size > num_rollouts:
        raise ValueError(f"train.batch_size is {train.batch_size}, more than the {num_rollouts} rollouts it draws "
                         f"from: set train.batch_size to at most {num_rollouts} (per process), or roll out more "
                         "prompts")


def micro_step_bytes(train, height: int, width: int) -> int:
    """The lower bound (bytes) on one process's micro-step memory described in this module's docstring."""
    branches = 2 if train.fuse_branches else 1
    return train.batch_size * branches * height * width * IMAGE_BYTES_PER_PIXEL


def device_memory(device: torch.device) -> int | None:
    """Total memory (bytes) of ``device``: the machine's RAM for a CPU, the GPU's own; None if unknown."""
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return None


def check_batch_memory(train, height: int, width: int, device: torch.device) -> None:
    """Refuse a ``train.batch_size`` whose :func:`micro_step_bytes` (all processes on a CPU) exceed the device."""
    total = device_memory(device)
    if total is None:
        return
    sharing = train.num_processes if device.type == "cpu" else 1  # processes of one node share its RAM
    need = micro_step_bytes(train, height, width) * sharing
    if need > total:
        per_sample = need // train.batch_size
        fits = max(1, total // per_sample)
        raise ValueError(f"train.batch_size is {train.batch_size}, which needs at least {need / 2**30:.1f} GiB for "
                         f"its {height}x{width} images (and their gradients) alone, more than this {device.type}'s "
                         f"{total / 2**30:.1f} GiB: set train.batch_size to at most {fits} (less with fuse_branches or "
                         "more processes), or train at a smaller policy height/width")
