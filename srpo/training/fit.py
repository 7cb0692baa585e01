"""Refuse a run the device cannot hold, before any weight loads: the memory plan against the device present.

Every step that puts a model on a device calls one function here first (:func:`check_training_fits`
or :func:`check_inference_fits`). The budget of one process is ``policy.gpu_memory_gb`` when the
config sets it (an explicit override), else what :func:`srpo.training.sizes.device_memory` reads: one
GPU's memory per process, or a CPU's RAM divided among the processes of the node. The plans read
only configuration files (:func:`srpo.training.memory.describe_model`), so a model folder or
``s3://`` prefix holding configs and no weights is refused just the same.
"""

from __future__ import annotations

import torch

from srpo.training import sizes
from srpo.training.memory import GB, MARGIN, fitting_settings, plan_inference, plan_memory, scorer_memory


class PlanError(ValueError):
    """A run whose memory plan exceeds the device: the first line names the setting, the rest is the plan."""


def device_budget(policy_cfg, device: torch.device, processes: int = 1) -> tuple[float | None, str]:
    """Bytes one process may plan for on ``device``, and how they were found (None: unknown, nothing refused)."""
    total = sizes.device_memory(device)
    declared = getattr(policy_cfg, "gpu_memory_gb", None)
    if declared is not None:
        # The card the config is written for; a smaller card present at run time is the budget instead.
        if device.type == "cuda" and total is not None and total < declared * GB:
            return total, (f"this GPU's {total / GB:.1f} GB (the config is written for "
                           f"policy.gpu_memory_gb = {declared:g} GB)")
        return declared * GB, f"policy.gpu_memory_gb = {declared:g} GB per GPU"
    if total is None:
        return None, "unknown"
    sharing = processes if device.type == "cpu" else 1  # a node's processes share its RAM; one per GPU
    where = f"this {device.type}'s {total / GB:.1f} GB" + (f" shared by {sharing} processes" if sharing > 1 else "")
    return total / sharing, where


def _setting(policy_cfg) -> str:
    if getattr(policy_cfg, "gpu_memory_gb", None) is not None:
        return f"policy.gpu_memory_gb = {policy_cfg.gpu_memory_gb:g}"
    return f"policy.height x width = {policy_cfg.height}x{policy_cfg.width}"


def check_training_fits(policy_cfg, train_cfg, reward_cfg, device: torch.device, metrics: dict | None = None):
    """The training plan of these configs, or a :class:`PlanError` when it exceeds ``device``'s budget.

    ``reward_cfg``: the reward the update holds (a multi-reward's config where one is trained against)."""
    budget, where = device_budget(policy_cfg, device, train_cfg.num_processes)
    plan = plan_memory(policy_cfg, train_cfg, reward_cfg, metrics=metrics)
    if device.type != "cuda" and getattr(policy_cfg, "gpu_memory_gb", None) is None:
        plan.notes.append("on a CPU: the CUDA context in the total is not needed")
    if budget is None or plan.total() <= budget:
        return plan
    fits = fitting_settings(policy_cfg, train_cfg, reward_cfg, budget / GB, metrics=metrics)
    fix = "; ".join(fits) if fits else "none found up to FSDP x8: lower policy.height/width or train.batch_size"
    raise PlanError(f"{_setting(policy_cfg)}: the training plan needs {plan.total() / GB:.1f} GB per process, more "
                    f"than {where} ({budget / GB:.1f} GB per process); settings that fit: {fix}\n{plan.describe()}")


def check_inference_fits(policy_cfg, device: torch.device, batch: int, num_samples: int, decode_batch: int = 0,
                         step: str = "generation", scorers=()):
    """The inference plan of ``step`` (rollouts: latents only; evaluation: decoded images), or a :class:`PlanError`."""
    budget, where = device_budget(policy_cfg, device)
    cuda = device.type == "cuda" or getattr(policy_cfg, "gpu_memory_gb", None) is not None
    plan = plan_inference(policy_cfg, batch, num_samples, decode_batch, cuda=cuda)
    plan.scorers = scorer_memory(scorers, 2 if plan.dtype == "bfloat16" else 4)[0]  # held with the policy
    if budget is None or plan.total() <= budget:
        return plan
    side = max(policy_cfg.height, policy_cfg.width)
    fits = None
    while side > 16 and fits is None:  # halve the longer side (kept a multiple of 16) until the plan fits
        side = max(16, (side // 2) // 16 * 16)
        smaller = policy_cfg.model_copy(update={"height": min(side, policy_cfg.height), "width": min(side, policy_cfg.width)})
        if plan_inference(smaller, batch, num_samples, decode_batch, cuda=cuda).total() + plan.scorers * MARGIN <= budget:
            fits = f"policy.height and width at most {side}"
    raise PlanError(f"{_setting(policy_cfg)}: the {step} step plans {plan.total() / GB:.1f} GB, more than {where}; settings that fit: {fits or 'none at any size: a larger device'}\n"
                    f"{plan.describe()}")


#: Prompts the rollout step runs through the transformer together (:func:`srpo.training.rollouts.sample_latents`).
ROLLOUT_BATCH = 4


def check_rollouts_fit(policy_cfg, rollout_cfg, num_prompts: int):
    """The rollout step's check: latents of every prompt, ``ROLLOUT_BATCH`` at a time (offline: one image encoded
    at a time), on the device ``policy.device`` resolves to."""
    from srpo.models.families import resolve_device

    n = min(num_prompts, rollout_cfg.num_prompts or num_prompts) if num_prompts else (rollout_cfg.num_prompts or 1)
    online = rollout_cfg.mode == "online"
    return check_inference_fits(policy_cfg, resolve_device(policy_cfg.device), batch=ROLLOUT_BATCH if online else 1,
                                num_samples=max(1, n), decode_batch=0 if online else 1, step="rollout")
