"""Checks of a policy config against its model folder, made before any weight is read.

Both read only configuration files (``model_index.json``, ``transformer/config.json``) and build the
transformer on the meta device, so they run at pipeline compile time and again in the job:

- :func:`check_family`: an explicit ``policy.family`` must be the family of the folder's pipeline
  (else diffusers fails late with "expected [...] but only {...} were passed");
- :func:`check_lora_rank`: ``train.lora_rank`` must not exceed the width (``min(in, out)``) of the
  smallest layer LoRA adapts: a larger rank adds parameters that cannot raise the update's rank.

A model the process cannot read without downloading weights (a hub id offline, a world model not
yet published) is checked where it can be: the published configs (:mod:`srpo.models.published_configs`)
stand in for the families' flagship hub ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from srpo.models.families import (adapter_class, check_folder_family, family_named, family_of_pipeline,
                                  read_model_index, resolve_location)
from srpo.models.published_configs import PUBLISHED


def local_model_folder(pretrained: str) -> Path | None:
    """The local folder of ``policy.pretrained`` when it can be read without fetching weights: a local
    folder or a built-in one (built on first use); None for hub ids, URLs and unpublished world models."""
    try:
        source = Path(resolve_location(pretrained)) if pretrained.startswith("builtin:") else Path(pretrained)
    except FileNotFoundError:  # a world model not published yet
        return None
    return source if (source / "model_index.json").is_file() else None


def check_family(pretrained: str, family: str | None) -> None:
    """Refuse ``policy.family`` when the folder's ``model_index.json`` names another supported family's
    pipeline (:func:`~srpo.models.families.check_folder_family`); unreadable folders are left to the load."""
    folder = local_model_folder(pretrained) if family is not None else None
    if folder is not None:
        check_folder_family(pretrained, str(folder), family)


def transformer_config(pretrained: str, family: str | None) -> tuple[str, dict] | None:
    """``(family, transformer config)`` of ``policy.pretrained`` without weights, or None when unreadable."""
    folder = local_model_folder(pretrained)
    if folder is not None:
        family = family or family_of_pipeline(read_model_index(str(folder)).get("_class_name", ""), f" in {folder}")
        config = json.loads((folder / "transformer" / "config.json").read_text())
        return family, {k: v for k, v in config.items() if not k.startswith("_")}
    family = family or next((f for f, p in PUBLISHED.items() if p["model"] == pretrained), None)
    if family in PUBLISHED and PUBLISHED[family]["model"] == pretrained:
        return family, PUBLISHED[family]["transformer"]
    return None


def meta_transformer(family: str, config: dict) -> torch.nn.Module:
    """The family's diffusers transformer built from ``config`` on the meta device (no memory, no weights)."""
    import diffusers

    with torch.device("meta"):
        return getattr(diffusers, family_named(family).transformer_class).from_config(config)


def targeted_linears(transformer: torch.nn.Module, targets) -> list[tuple[str, torch.nn.Linear]]:
    """The ``nn.Linear`` modules LoRA adapts for ``targets`` (peft's rule: the name equals a target or ends in ``.target``)."""
    return [(name, module) for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)
            and any(name == t or name.endswith("." + t) for t in targets)]


def smallest_lora_width(transformer: torch.nn.Module, targets) -> tuple[int, str, tuple[int, int]] | None:
    """``(width, module name, (in, out))`` of the narrowest targeted layer (width ``min(in, out)``); None if none matches."""
    layers = [(min(m.in_features, m.out_features), name, (m.in_features, m.out_features))
              for name, m in targeted_linears(transformer, targets)]
    return min(layers) if layers else None


def check_lora_rank(policy_cfg, train_cfg) -> None:
    """Refuse ``train.lora_rank`` above the width of the smallest layer LoRA targets (and targets that match
    no layer), from the transformer's ``config.json`` on the meta device. Full fine-tuning: nothing to check."""
    if getattr(train_cfg, "finetune", "full") != "lora":
        return
    found = transformer_config(policy_cfg.pretrained, getattr(policy_cfg, "family", None))
    if found is None:
        return
    family, config = found
    transformer = meta_transformer(family, config)
    targets = list(train_cfg.lora_targets or adapter_class(family).lora_targets_for(transformer))
    smallest = smallest_lora_width(transformer, targets)
    setting = "train.lora_targets" if train_cfg.lora_targets else f"the {family} family's LoRA targets"
    if smallest is None:
        raise ValueError(f"{setting} = {targets} match no Linear layer of {policy_cfg.pretrained}'s transformer: "
                         "give module-name suffixes of its Linear layers (e.g. attn.to_q)")
    width, name, (fan_in, fan_out) = smallest
    if train_cfg.lora_rank > width:
        raise ValueError(f"train.lora_rank = {train_cfg.lora_rank} is above the width of the smallest layer LoRA "
                         f"adapts in {policy_cfg.pretrained}'s transformer ({name}: {fan_in} -> {fan_out}, width "
                         f"{width}): set train.lora_rank to at most {width}; a larger rank cannot raise the "
                         "update's rank, only its cost")


def check_policy(policy_cfg, train_cfg) -> None:
    """Every check of this module on a run's ``policy`` and ``train`` configs (compile time, and the job)."""
    check_family(policy_cfg.pretrained, getattr(policy_cfg, "family", None))
    check_lora_rank(policy_cfg, train_cfg)
