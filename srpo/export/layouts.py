"""Key layouts of each family's transformer: diffusers' names and the original (ComfyUI / kohya) names.

diffusers ships converters *into* its own layout (``diffusers.loaders.single_file_utils`` for
whole checkpoints, ``lora_conversion_utils`` for LoRAs); this module is their inverse, written as
one table of rules per family. A rule maps a diffusers module name (regex, full match) to the
original module name. Several diffusers modules may form one original module (FLUX's
``img_attn.qkv`` is ``to_q``, ``to_k``, ``to_v`` stacked on the output dimension): the rule names
the parts in their stacking order. A module no rule matches keeps its name (Qwen-Image's original
names are diffusers' names).

What each layout holds (``LORA_LAYOUTS`` says which exist per family):

- ``single-file``: the whole transformer with the original names, what ComfyUI's ``UNETLoader``
  (``load_diffusion_model``) reads; BFL's released FLUX files have these keys, no prefix.
- ``comfyui`` LoRA: ``diffusion_model.<original module>.lora_down.weight`` / ``lora_up.weight`` /
  ``alpha`` (ComfyUI's ``model_lora_keys_unet`` maps every ``diffusion_model.*`` weight). FLUX.2
  uses ``lora_A`` / ``lora_B`` without alpha (what diffusers' reader of that layout accepts and
  ComfyUI reads too); Z-Image uses diffusers' module names after the prefix (ComfyUI maps those
  onto slices of its fused ``qkv`` through ``z_image_to_diffusers``).
- ``kohya`` LoRA: ``lora_unet_<original module, dots as underscores>`` with ``lora_down`` /
  ``lora_up`` / ``alpha``: sd-scripts' and musubi-tuner's names.

A LoRA on the parts of a fused module becomes one LoRA on the fused module: the downs stacked
(``[k*R, in]``), the ups block-diagonal (``[sum out_i, k*R]``), parts without a LoRA (or of smaller
rank) padded with zeros. Its product is exactly the parts' products stacked, and diffusers'
readers split it back exactly (they detect the block-diagonal form). The scale ``alpha / r`` is
folded into ``lora_up`` and ``alpha`` is written equal to the written rank (scale 1): every
reader then applies the same update, whatever its alpha convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

EXPORT_FORMATS = ("diffusers", "single-file", "comfyui", "kohya")


@dataclass(frozen=True)
class Rule:
    """diffusers module ``pattern`` (full match) -> ``original`` (a ``re`` template); fused ``parts`` in order.

    ``parts``: the alternatives the named group ``part`` of ``pattern`` takes, in stacking order
    (``()`` when the module is not fused). ``swap``: the weight is ``(scale, shift)`` in diffusers and
    ``(shift, scale)`` in the original (``"last"``: only in the last block). ``scale``: the
    parameter is called ``scale`` in the original (FLUX's RMS norms).
    """

    pattern: str
    original: str
    parts: tuple[str, ...] = ()
    swap: bool | str = False
    scale: bool = False

    def match(self, module: str) -> re.Match | None:
        return re.fullmatch(self.pattern, module)


def _rules(*rows) -> tuple[Rule, ...]:
    return tuple(Rule(*row) if isinstance(row, tuple) else row for row in rows)


_QKV = ("to_q", "to_k", "to_v")
_ADD_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")

def _bfl_rules(mlps: dict[str, str], extra: tuple) -> tuple[Rule, ...]:
    """BFL's double / single stream names (FLUX.1 and FLUX.2 share them); ``mlps``: diffusers -> BFL MLP suffix."""
    blocks = [
        (r"transformer_blocks\.(\d+)\.attn\.(?P<part>to_q|to_k|to_v)", r"double_blocks.\1.img_attn.qkv", _QKV),
        (r"transformer_blocks\.(\d+)\.attn\.(?P<part>add_q_proj|add_k_proj|add_v_proj)", r"double_blocks.\1.txt_attn.qkv",
         _ADD_QKV),
        (r"transformer_blocks\.(\d+)\.attn\.to_out\.0", r"double_blocks.\1.img_attn.proj"),
        (r"transformer_blocks\.(\d+)\.attn\.to_add_out", r"double_blocks.\1.txt_attn.proj"),
        *[Rule(rf"transformer_blocks\.(\d+)\.attn\.{d}", rf"double_blocks.\1.{o}", scale=True) for d, o in (
            ("norm_q", "img_attn.norm.query_norm"), ("norm_k", "img_attn.norm.key_norm"),
            ("norm_added_q", "txt_attn.norm.query_norm"), ("norm_added_k", "txt_attn.norm.key_norm"))],
        *[(rf"transformer_blocks\.(\d+)\.{re.escape(d)}", rf"double_blocks.\1.{o}") for d, o in mlps.items()],
        *[Rule(rf"single_transformer_blocks\.(\d+)\.attn\.norm_{x}", rf"single_blocks.\1.norm.{n}_norm", scale=True)
          for x, n in (("q", "query"), ("k", "key"))],
        (r"x_embedder", "img_in"),
        (r"context_embedder", "txt_in"),
        (r"proj_out", "final_layer.linear"),
        Rule(r"norm_out\.linear", "final_layer.adaLN_modulation.1", swap=True),
    ]
    return _rules(*extra, *blocks)


#: FLUX.1 (inverse of ``convert_flux_transformer_checkpoint_to_diffusers``).
FLUX_RULES = _bfl_rules(
    {"ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0",
     "ff_context.net.2": "txt_mlp.2"},
    ((r"transformer_blocks\.(\d+)\.norm1\.linear", r"double_blocks.\1.img_mod.lin"),
     (r"transformer_blocks\.(\d+)\.norm1_context\.linear", r"double_blocks.\1.txt_mod.lin"),
     (r"single_transformer_blocks\.(\d+)\.(?P<part>attn\.to_q|attn\.to_k|attn\.to_v|proj_mlp)",
      r"single_blocks.\1.linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),
     (r"single_transformer_blocks\.(\d+)\.proj_out", r"single_blocks.\1.linear2"),
     (r"single_transformer_blocks\.(\d+)\.norm\.linear", r"single_blocks.\1.modulation.lin"),
     *[(rf"time_text_embed\.{d}_embedder\.linear_{i}", f"{o}_in.{layer}_layer")
       for d, o in (("timestep", "time"), ("guidance", "guidance"), ("text", "vector"))
       for i, layer in ((1, "in"), (2, "out"))]))

#: FLUX.2 [dev] and [klein] (inverse of ``convert_flux2_transformer_checkpoint_to_diffusers``).
FLUX2_RULES = _bfl_rules(
    {"ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2", "ff_context.linear_in": "txt_mlp.0",
     "ff_context.linear_out": "txt_mlp.2"},
    ((r"single_transformer_blocks\.(\d+)\.attn\.to_qkv_mlp_proj", r"single_blocks.\1.linear1"),
     (r"single_transformer_blocks\.(\d+)\.attn\.to_out", r"single_blocks.\1.linear2"),
     *[(rf"time_guidance_embed\.{d}_embedder\.linear_{i}", f"{o}_in.{layer}_layer")
       for d, o in (("timestep", "time"), ("guidance", "guidance")) for i, layer in ((1, "in"), (2, "out"))],
     *[(rf"{m}\.linear", f"{m}.lin") for m in ("double_stream_modulation_img", "double_stream_modulation_txt",
                                               "single_stream_modulation")]))

#: SD3 / SD3.5 MMDiT (inverse of ``convert_sd3_transformer_checkpoint_to_diffusers``).
SD3_RULES = _rules(
    (r"transformer_blocks\.(\d+)\.attn\.(?P<part>to_q|to_k|to_v)", r"joint_blocks.\1.x_block.attn.qkv", _QKV),
    (r"transformer_blocks\.(\d+)\.attn\.(?P<part>add_q_proj|add_k_proj|add_v_proj)",
     r"joint_blocks.\1.context_block.attn.qkv", _ADD_QKV),
    (r"transformer_blocks\.(\d+)\.attn2\.(?P<part>to_q|to_k|to_v)", r"joint_blocks.\1.x_block.attn2.qkv", _QKV),
    (r"transformer_blocks\.(\d+)\.attn\.to_out\.0", r"joint_blocks.\1.x_block.attn.proj"),
    (r"transformer_blocks\.(\d+)\.attn\.to_add_out", r"joint_blocks.\1.context_block.attn.proj"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_out\.0", r"joint_blocks.\1.x_block.attn2.proj"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_q", r"joint_blocks.\1.x_block.attn.ln_q"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_k", r"joint_blocks.\1.x_block.attn.ln_k"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_q", r"joint_blocks.\1.context_block.attn.ln_q"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_k", r"joint_blocks.\1.context_block.attn.ln_k"),
    (r"transformer_blocks\.(\d+)\.attn2\.norm_q", r"joint_blocks.\1.x_block.attn2.ln_q"),
    (r"transformer_blocks\.(\d+)\.attn2\.norm_k", r"joint_blocks.\1.x_block.attn2.ln_k"),
    (r"transformer_blocks\.(\d+)\.norm1\.linear", r"joint_blocks.\1.x_block.adaLN_modulation.1"),
    Rule(r"transformer_blocks\.(\d+)\.norm1_context\.linear", r"joint_blocks.\1.context_block.adaLN_modulation.1",
         swap="last"),
    (r"transformer_blocks\.(\d+)\.ff\.net\.0\.proj", r"joint_blocks.\1.x_block.mlp.fc1"),
    (r"transformer_blocks\.(\d+)\.ff\.net\.2", r"joint_blocks.\1.x_block.mlp.fc2"),
    (r"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj", r"joint_blocks.\1.context_block.mlp.fc1"),
    (r"transformer_blocks\.(\d+)\.ff_context\.net\.2", r"joint_blocks.\1.context_block.mlp.fc2"),
    (r"pos_embed\.proj", "x_embedder.proj"),
    (r"time_text_embed\.timestep_embedder\.linear_1", "t_embedder.mlp.0"),
    (r"time_text_embed\.timestep_embedder\.linear_2", "t_embedder.mlp.2"),
    (r"time_text_embed\.text_embedder\.linear_1", "y_embedder.mlp.0"),
    (r"time_text_embed\.text_embedder\.linear_2", "y_embedder.mlp.2"),
    (r"proj_out", "final_layer.linear"),
    Rule(r"norm_out\.linear", "final_layer.adaLN_modulation.1", swap=True),
)

#: Z-Image (inverse of ``convert_z_image_transformer_checkpoint_to_diffusers``).
Z_IMAGE_RULES = _rules(
    (r"(layers|noise_refiner|context_refiner)\.(\d+)\.attention\.(?P<part>to_q|to_k|to_v)", r"\1.\2.attention.qkv", _QKV),
    (r"(layers|noise_refiner|context_refiner)\.(\d+)\.attention\.to_out\.0", r"\1.\2.attention.out"),
    (r"(layers|noise_refiner|context_refiner)\.(\d+)\.attention\.norm_q", r"\1.\2.attention.q_norm"),
    (r"(layers|noise_refiner|context_refiner)\.(\d+)\.attention\.norm_k", r"\1.\2.attention.k_norm"),
    (r"all_final_layer\.2-1\.(.+)", r"final_layer.\1"),
    (r"all_x_embedder\.2-1", "x_embedder"),
)

#: A whole parameter whose name is not ``<module>.<param>`` in the original.
PARAM_RENAMES = {"sd3": {"pos_embed.pos_embed": "pos_embed"}}


@dataclass(frozen=True)
class FamilyLayout:
    rules: tuple[Rule, ...]
    comfy_names: str = "original"  # "original" or "diffusers": the module names after ``diffusion_model.``
    comfy_keys: str = "down_up"  # "down_up" (+ alpha) or "A_B" (no alpha)
    #: layouts diffusers' own readers (``<Pipeline>.lora_state_dict``) convert back; the others are
    #: checked against the original checkpoint's names and shapes instead
    diffusers_reads: frozenset[str] = frozenset({"comfyui", "kohya"})


LAYOUTS: dict[str, FamilyLayout] = {
    "flux": FamilyLayout(FLUX_RULES),
    "flux2": FamilyLayout(FLUX2_RULES, comfy_keys="A_B"),
    "flux2-klein": FamilyLayout(FLUX2_RULES, comfy_keys="A_B"),
    "sd3": FamilyLayout(SD3_RULES, diffusers_reads=frozenset()),
    "qwen-image": FamilyLayout(()),
    "z-image": FamilyLayout(Z_IMAGE_RULES, comfy_names="diffusers"),
    # the edit families: their transformers are the text-to-image ones (Kontext is FLUX.1's, the sources are
    # extra tokens, no extra weights), so their checkpoints and LoRAs use the same names
    "flux-kontext": FamilyLayout(FLUX_RULES),
    "qwen-image-edit": FamilyLayout(()),
    "qwen-image-edit-plus": FamilyLayout(()),
}


def layout_of(family: str) -> FamilyLayout:
    if family not in LAYOUTS:
        raise ValueError(f"family {family!r} has no export layout: known are {sorted(LAYOUTS)}")
    return LAYOUTS[family]


@dataclass(frozen=True)
class Target:
    """Where one diffusers module lands: ``module`` in the original, part ``index`` of ``siblings``."""

    module: str
    siblings: tuple[str, ...]  # the diffusers modules stacked into ``module``, in order (itself alone if not fused)
    index: int
    swap: bool
    scale: bool


def original_target(family: str, module: str, last_block: int | None = None) -> Target:
    """The original module a diffusers ``module`` belongs to (identity when no rule matches)."""
    for rule in layout_of(family).rules:
        m = rule.match(module)
        if m is None:
            continue
        original = m.expand(rule.original)
        swap = rule.swap is True or (rule.swap == "last" and last_block is not None and int(m.group(1)) == last_block)
        if not rule.parts:
            return Target(original, (module,), 0, swap, rule.scale)
        lo, hi = m.span("part")
        siblings = tuple(module[:lo] + p + module[hi:] for p in rule.parts)
        return Target(original, siblings, rule.parts.index(m.group("part")), swap, rule.scale)
    return Target(module, (module,), 0, False, False)


def _last_block(keys) -> int | None:
    blocks = [int(m.group(1)) for k in keys if (m := re.match(r"transformer_blocks\.(\d+)\.", k))]
    return max(blocks) if blocks else None


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """``(a, b)`` -> ``(b, a)`` along dim 0: (scale, shift) <-> (shift, scale); its own inverse."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_original_state_dict(family: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers transformer state dict in the family's original layout (what ComfyUI's UNETLoader reads).

    Raises:
        ValueError: a fused module lacks one of its parts (the state dict is not a whole transformer).
    """
    renames = PARAM_RENAMES.get(family, {})
    last = _last_block(state)
    out: dict[str, torch.Tensor] = {}
    done: set[str] = set()
    for key in state:
        if key in done:
            continue
        if key in renames or "." not in key:  # a renamed parameter, or one of the model itself
            out[renames.get(key, key)] = state[key]
            done.add(key)
            continue
        module, _, param = key.rpartition(".")
        target = original_target(family, module, last)
        names = [f"{s}.{param}" for s in target.siblings]
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"{family} transformer weight {key!r} is stacked with {missing}, which the state dict "
                             "lacks: export needs the whole transformer")
        tensor = torch.cat([state[n] for n in names], dim=0) if len(names) > 1 else state[key]
        if target.swap:
            tensor = swap_halves(tensor)
        out[f"{target.module}.{'scale' if target.scale and param == 'weight' else param}"] = tensor
        done.update(names)
    return out


# ------------------------------------------------------------------------------------------- LoRA

def peft_modules(lora: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (A [r, in], B [out, r])}`` of a diffusers / peft LoRA state dict (``transformer.`` prefix optional)."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        m = re.fullmatch(r"(?:transformer\.)?(.+)\.lora_([AB])\.weight", key)
        if m is None:
            raise ValueError(f"LoRA key {key!r} is not a diffusers/peft LoRA weight (<module>.lora_A.weight or "
                             "lora_B.weight): export reads what training saves (pytorch_lora_weights.safetensors)")
        found.setdefault(m.group(1), {})[m.group(2)] = value
    incomplete = sorted(k for k, v in found.items() if len(v) != 2)
    if incomplete:
        raise ValueError(f"LoRA modules {incomplete[:3]} have lora_A or lora_B but not both: the file is damaged")
    return {k: (v["A"], v["B"]) for k, v in found.items()}


def module_scales(modules, adapter_config: Mapping | None) -> dict[str, float]:
    """``alpha / r`` per module from peft's adapter config (``lora_alpha``, ``r``, their per-module patterns).

    Without a config diffusers loads with alpha = r (scale 1), so that is the scale here too.
    """
    if not adapter_config:
        return {m: 1.0 for m in modules}
    alpha_pattern = adapter_config.get("alpha_pattern") or {}
    rank_pattern = adapter_config.get("rank_pattern") or {}

    def pick(patterns: Mapping, module: str, default):
        for pat, value in patterns.items():
            if module == pat or module.endswith("." + pat) or re.fullmatch(pat, module):
                return value
        return default

    return {m: float(pick(alpha_pattern, m, adapter_config["lora_alpha"])) / float(pick(rank_pattern, m, adapter_config["r"]))
            for m in modules}


def lora_to_layout(family: str, layout: str, lora: Mapping[str, torch.Tensor], scales: Mapping[str, float],
                   shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A diffusers LoRA as ``layout`` (``"comfyui"`` or ``"kohya"``) of ``family``; scale folded into the ups.

    ``shapes``: the base transformer's weight shapes by diffusers key (``<module>.weight``), for the
    zero blocks of fused parts the LoRA does not touch.
    """
    if layout not in ("comfyui", "kohya"):
        raise ValueError(f"LoRA layout {layout!r} is not one of 'comfyui', 'kohya'")
    spec = layout_of(family)
    modules = peft_modules(lora)
    last = _last_block(f"{m}.weight" for m in shapes)
    groups: dict[Target, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for module, (a, b) in modules.items():
        target = original_target(family, module, last)
        if target.swap:  # the (scale, shift) rows swap in the original; a LoRA there swaps its up's rows
            b = swap_halves(b)
        key = Target(target.module, target.siblings, 0, False, False)
        groups.setdefault(key, {})[module] = (a, b * scales[module])
    out: dict[str, torch.Tensor] = {}
    for target, parts in groups.items():
        if layout == "comfyui" and spec.comfy_names == "diffusers":  # one entry per diffusers module
            for module, (a, b) in parts.items():
                _put(out, f"diffusion_model.{module}", a, b, spec.comfy_keys)
            continue
        down, up = _stack(target, parts, shapes)
        name = f"diffusion_model.{target.module}" if layout == "comfyui" else "lora_unet_" + target.module.replace(".", "_")
        _put(out, name, down, up, spec.comfy_keys if layout == "comfyui" else "down_up")
    return out


def _stack(target: Target, parts, shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA on a fused module from LoRAs on its parts: downs stacked, ups block-diagonal (zero-padded)."""
    if len(target.siblings) == 1:
        return parts[target.siblings[0]]
    rank = max(a.shape[0] for a, _ in parts.values())
    a0, b0 = next(iter(parts.values()))
    downs, ups = [], []
    for s in target.siblings:
        if s in parts:
            a, b = parts[s]
        else:
            if f"{s}.weight" not in shapes:
                raise ValueError(f"the base transformer has no weight {s}.weight, needed to fuse {target.module}")
            a, b = a0.new_zeros(0, a0.shape[1]), b0.new_zeros(shapes[f"{s}.weight"][0], 0)
        downs.append(torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])]))  # [R, in]
        ups.append(torch.cat([b, b.new_zeros(b.shape[0], rank - b.shape[1])], dim=1))  # [out_i, R]
    return torch.cat(downs), torch.block_diag(*ups)  # [k*R, in], [sum out_i, k*R]


def _put(out: dict, name: str, down: torch.Tensor, up: torch.Tensor, keys: str) -> None:
    down, up = down.contiguous(), up.contiguous()
    if keys == "A_B":
        out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
        return
    out[f"{name}.lora_down.weight"], out[f"{name}.lora_up.weight"] = down, up
    out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]), dtype=down.dtype)


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * B @ A``: the weight update of one LoRA module, ``[out, in]`` (computed in float32)."""
    return (b.float() @ a.float()) * scale
