"""The model families this library trains, and the one entry that loads any of them as a :class:`Policy`.

The family of a model folder is read from its ``model_index.json`` (``_class_name``, the diffusers
pipeline class); an explicit family name overrides it. ``FAMILIES`` is the one table:

========================  =============================  ====================================================================
family                    diffusers pipeline             adapter
========================  =============================  ====================================================================
``flux``                  ``FluxPipeline``               :class:`srpo.models.flux.FluxPolicy`
``qwen-image``            ``QwenImagePipeline``          :class:`srpo.models.qwen_image.QwenImagePolicy`
``sd3``                   ``StableDiffusion3Pipeline``   :class:`srpo.models.sd3.SD3Policy`
``flux2``                 ``Flux2Pipeline``              :class:`srpo.models.flux2.Flux2Policy`
``flux2-klein``           ``Flux2KleinPipeline``         :class:`srpo.models.flux2.Flux2KleinPolicy`
``z-image``               ``ZImagePipeline``             :class:`srpo.models.z_image.ZImagePolicy`
``flux-kontext``          ``FluxKontextPipeline``        :class:`srpo.models.flux_kontext.FluxKontextPolicy` (edits)
``qwen-image-edit``       ``QwenImageEditPipeline``      :class:`srpo.models.qwen_image_edit.QwenImageEditPolicy` (edits)
``qwen-image-edit-plus``  ``QwenImageEditPlusPipeline``  :class:`srpo.models.qwen_image_edit.QwenImageEditPlusPolicy` (edits)
========================  =============================  ====================================================================
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import NamedTuple

import torch

from srpo.io import resolve_model_location
from srpo.models.base import LORA_WEIGHTS
from srpo.models.quantize import check_quantization_device
from srpo.published import is_builtin, resolve_builtin


class Family(NamedTuple):
    pipeline_class: str  # diffusers pipeline class name (model_index.json's _class_name)
    transformer_class: str  # diffusers transformer class the pipeline holds
    adapter: str  # "module:Class" of the Policy subclass


FAMILIES: dict[str, Family] = {
    "flux": Family("FluxPipeline", "FluxTransformer2DModel", "srpo.models.flux:FluxPolicy"),
    "qwen-image": Family("QwenImagePipeline", "QwenImageTransformer2DModel", "srpo.models.qwen_image:QwenImagePolicy"),
    "sd3": Family("StableDiffusion3Pipeline", "SD3Transformer2DModel", "srpo.models.sd3:SD3Policy"),
    "flux2": Family("Flux2Pipeline", "Flux2Transformer2DModel", "srpo.models.flux2:Flux2Policy"),
    "flux2-klein": Family("Flux2KleinPipeline", "Flux2Transformer2DModel", "srpo.models.flux2:Flux2KleinPolicy"),
    "z-image": Family("ZImagePipeline", "ZImageTransformer2DModel", "srpo.models.z_image:ZImagePolicy"),
    "flux-kontext": Family("FluxKontextPipeline", "FluxTransformer2DModel", "srpo.models.flux_kontext:FluxKontextPolicy"),
    "qwen-image-edit": Family("QwenImageEditPipeline", "QwenImageTransformer2DModel",
                              "srpo.models.qwen_image_edit:QwenImageEditPolicy"),
    "qwen-image-edit-plus": Family("QwenImageEditPlusPipeline", "QwenImageTransformer2DModel",
                                   "srpo.models.qwen_image_edit:QwenImageEditPlusPolicy"),
}


def supported_pipelines() -> str:
    return ", ".join(f"{f.pipeline_class} ({name})" for name, f in FAMILIES.items())


def family_named(name: str) -> Family:
    """The :class:`Family` called ``name``; a clear error listing the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"policy.family {name!r} is not a supported model family: use one of "
                         f"{sorted(FAMILIES)} (pipelines: {supported_pipelines()})")
    return FAMILIES[name]


def family_of_pipeline(pipeline_class: str, where: str = "") -> str:
    """The family name of a diffusers pipeline class name; a clear error listing the supported ones."""
    for name, family in FAMILIES.items():
        if family.pipeline_class == pipeline_class:
            return name
    raise ValueError(f"model_index.json _class_name {pipeline_class!r}{where} is not a supported pipeline: "
                     f"supported are {supported_pipelines()}; set policy.family to force one")


def read_model_index(source: str) -> dict:
    """``model_index.json`` of a local folder or a hub id (the hub copy through ``hf_hub_download``)."""
    path = Path(source) / "model_index.json"
    if not path.exists():
        if Path(source).exists():
            raise FileNotFoundError(f"model folder {source!r} has no model_index.json: it must hold a diffusers "
                                    "pipeline layout (save_pretrained writes one)")
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, "model_index.json"))
    return json.loads(path.read_text())


def detect_family(source: str) -> str:
    """The family of a resolved model location, read from its ``model_index.json``."""
    return family_of_pipeline(read_model_index(source).get("_class_name", ""), f" in {source}")


def check_folder_family(location: str, source: str, family: str) -> None:
    """Refuse an explicit ``family`` when the folder ``source``'s ``model_index.json`` names another
    supported family's pipeline. A pipeline class no family supports is left to the explicit family
    (``policy.family`` forces one)."""
    spec = family_named(family)  # an unknown name: the error listing the known ones
    pipeline = read_model_index(source).get("_class_name", "")
    implied = next((name for name, f in FAMILIES.items() if f.pipeline_class == pipeline), None)
    if implied is not None and implied != family:
        raise ValueError(f"policy.family = {family!r}, but {location} is a {pipeline} (its model_index.json "
                         f"_class_name), which is family {implied!r}: set policy.family: {implied} or leave it out "
                         f"(the family is read from the folder), or point policy.pretrained at a "
                         f"{spec.pipeline_class} folder")


def adapter_class(family: str):
    """The :class:`~srpo.models.base.Policy` subclass of ``family`` (imported on first use)."""
    module, _, cls = family_named(family).adapter.partition(":")
    return getattr(importlib.import_module(module), cls)


def resolve_location(location: str) -> str:
    """A local folder or hub id for ``location``; built-in names resolve through :mod:`srpo.published`."""
    if is_builtin(location):
        import srpo.models.tiny  # noqa: F401  (provide the tiny pipelines' builders)
        import srpo.models.tiny_families  # noqa: F401

        return str(resolve_builtin("policy", location))
    return resolve_model_location(location)


def load_pipeline(location: str, family: str | None = None, transformer: str | None = None,
                  torch_dtype=torch.float32, text_encoders: bool = True):
    """The family's diffusers pipeline ``from_pretrained`` a folder, fsspec URL, hub id or built-in name.

    ``transformer`` optionally replaces the pipeline's transformer by a diffusers transformer
    folder, or adds a LoRA adapter folder (``pytorch_lora_weights.safetensors``): what training saves.
    Returns ``(family, pipeline)``.
    """
    import diffusers

    source = resolve_location(location)
    if family is not None and Path(source).is_dir():
        check_folder_family(location, str(source), family)  # before diffusers fails on missing components
    family = family or detect_family(source)
    spec = family_named(family)
    kwargs, lora = {}, None
    if not text_encoders:  # the training process on stored conditioning: T5 / Qwen2.5-VL / Mistral never load
        kwargs.update({name: None for name in read_model_index(source) if name.startswith("text_encoder")})
    if transformer is not None:
        tuned = resolve_model_location(transformer)
        if (Path(tuned) / LORA_WEIGHTS).exists():
            lora = tuned  # a LoRA adapter saved by the trainer: applied on top of the base transformer
        else:
            kwargs["transformer"] = getattr(diffusers, spec.transformer_class).from_pretrained(tuned, dtype=torch_dtype)
    try:
        pipe = getattr(diffusers, spec.pipeline_class).from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as err:
        raise OSError(f"could not load a {spec.pipeline_class} from {location!r}: {err}. A local folder must "
                      "hold a diffusers layout (model_index.json and the component folders it names: "
                      "transformer/, vae/, scheduler/, text encoders and tokenizers)") from err
    if lora is not None:
        pipe.load_lora_weights(lora)
    return family, pipe


def load_policy_for(location: str, family: str | None = None, *, transformer: str | None = None,
                    device: str | torch.device = "cpu", torch_dtype=torch.float32, autocast_dtype=None,
                    text_encoders: bool = True, **policy_kwargs):
    """The :class:`~srpo.models.base.Policy` of the model at ``location`` (family from its model_index.json).

    ``policy_kwargs`` go to the adapter (``negative_prompt``, ``cfg_in_training``, ...).
    """
    family, pipe = load_pipeline(location, family, transformer, torch_dtype, text_encoders)
    return adapter_class(family)(pipe, device, autocast_dtype, **policy_kwargs)


def frozen_dtype(cfg) -> torch.dtype:
    """The dtype a ``PolicyConfig`` keeps untrained weights in: ``frozen_dtype``, else autocast's, else ``dtype``."""
    name = cfg.frozen_dtype or (cfg.autocast if cfg.autocast != "none" else cfg.dtype)
    return getattr(torch, name)


def inference_config(cfg):
    """The ``PolicyConfig`` a no-grad step (rollouts, evaluation) loads: under bf16 autocast the transformer is
    held in bf16 too (autocast computes its matrix products in bf16 anyway; half the weight memory)."""
    if getattr(cfg, "autocast", "none") == "bfloat16" and cfg.dtype != "bfloat16":
        return cfg.model_copy(update={"dtype": "bfloat16", "frozen_dtype": cfg.frozen_dtype or "bfloat16"})
    return cfg


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_policy(cfg, transformer: str | None = None, device: str | torch.device | None = None,
                text_encoders: bool = True):
    """The policy of a ``PolicyConfig`` (any family); ``transformer`` / ``device`` override the config's.

    ``text_encoders=False`` loads none (the training process over a rollout set's stored conditioning).

    The family comes from the model folder unless the config names one (``family``); the config's
    ``negative_prompt`` and ``cfg_in_training``, where it has them, go to the policy.
    """
    device = torch.device(device) if device is not None else resolve_device(cfg.device)
    check_quantization_device(getattr(cfg, "base_quantization", "none"), device)  # before any weights load
    guidance = {k: getattr(cfg, k) for k in ("negative_prompt", "cfg_in_training") if getattr(cfg, k, None) is not None}
    policy = load_policy_for(
        cfg.pretrained, getattr(cfg, "family", None), transformer=transformer or cfg.transformer, device=device,
        torch_dtype=getattr(torch, cfg.dtype), autocast_dtype=torch.bfloat16 if cfg.autocast == "bfloat16" else None,
        text_encoders=text_encoders, **guidance)
    return prepare_policy(policy, cfg)


def prepare_policy(policy, cfg):
    """Apply a ``PolicyConfig``'s resolution check, frozen dtype, checkpointing and compilation."""
    policy.latent_shape(cfg.height, cfg.width)  # validates the resolution against this VAE
    policy.frozen_dtype = frozen_dtype(cfg)
    policy.base_quantization = getattr(cfg, "base_quantization", "none")  # applied by the trainer, under LoRA
    policy.store_frozen_in(policy.frozen_dtype)
    if cfg.gradient_checkpointing:
        policy.transformer.enable_gradient_checkpointing()
    if cfg.compile:
        policy.compile_blocks(cfg.compile_mode, cfg.compile_backend)
    return policy
