"""Exported layouts read back through diffusers' own converters, for every family.

- a kohya or ComfyUI LoRA loaded with the family pipeline's ``load_lora_weights`` gives the same
  velocity as the diffusers LoRA it came from (tiny models, every family whose layout diffusers reads);
- a whole transformer in the original layout converts back through diffusers' single-file
  converter to the same tensors (tiny models; FLUX.1's converter hard-codes FLUX.1-dev's widths,
  so FLUX.1 is checked on a state dict with those widths and one column);
- SD3.5's LoRA layouts, which no diffusers reader converts, are checked against the names and
  shapes of the original checkpoint;
- a merged single file equals base plus LoRA.
"""

from __future__ import annotations

import pytest
import torch

from srpo.export.layouts import (LAYOUTS, lora_delta, lora_to_layout, module_scales, original_target, peft_modules,
                                 to_original_state_dict)
from srpo.export.merge import merge_lora

FAMILIES = sorted(LAYOUTS)


def _policy_with_lora(folder, rank=4, alpha=8.0):
    from srpo.models.families import load_policy_for
    from srpo.training.lora import add_lora, lora_state_dict

    policy = load_policy_for(str(folder))
    add_lora(policy.transformer, rank, alpha, list(policy.lora_targets), seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    lora = {f"transformer.{k}": v for k, v in lora_state_dict(policy.transformer).items()}
    return policy, lora, policy.transformer.peft_config["default"].to_dict()


def _velocity(policy):
    """The velocity at one noisy latent; an edit family's conditioned on a (seeded random) source image."""
    torch.manual_seed(0)
    c, h, w = policy.latent_shape(64, 64)
    x = torch.randn(1, c, h, w)
    if policy.edits_images:  # the LoRA also acts on the source's tokens
        source = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
        cond = policy.encode_prompts(["make the circle red"], policy.encode_sources(source))
    else:
        cond = policy.encode_prompts(["a red circle"])
    with torch.no_grad():
        return policy.velocity(x, torch.tensor([0.7]), cond, policy.default_guidance)


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_lora_gives_the_same_velocity_through_diffusers_readers(family, family_dirs):
    """kohya and ComfyUI layouts -> ``load_lora_weights`` -> the diffusers LoRA's velocity (float tolerance)."""
    spec = LAYOUTS[family]
    policy, lora, config = _policy_with_lora(family_dirs[family])
    if family in ("flux", "flux-kontext"):  # the same reader (FluxLoraLoaderMixin)
        # diffusers 0.42's FLUX.1 kohya reader splits linear1 at FLUX.1-dev's widths (checked at those widths
        # below) and drops the final layer (its keys lack the ``transformer.`` prefix): compare without them
        def dropped(module):
            return module == "proj_out" or ("single_transformer_blocks" in module and module.split(".")[-1] != "proj_out")
        lora = {k: v for k, v in lora.items() if not dropped(k.removeprefix("transformer.").rsplit(".", 2)[0])}
        with torch.no_grad():
            for name, p in policy.transformer.named_parameters():
                if "lora_B" in name and dropped(name.split(".lora_B")[0]):
                    p.zero_()
    v_lora = _velocity(policy)
    policy.transformer.delete_adapters("default")
    v_base = _velocity(policy)
    assert (v_lora - v_base).abs().max() > 1e-3  # the LoRA moves the velocity: the comparison can fail
    shapes = {k: tuple(v.shape) for k, v in policy.transformer.state_dict().items() if "lora_" not in k}
    shapes = {k.replace(".base_layer", ""): v for k, v in shapes.items()}
    scales = module_scales(peft_modules(lora), config)
    for layout in sorted(spec.diffusers_reads):
        converted = lora_to_layout(family, layout, lora, scales, shapes)
        prefix = "diffusion_model." if layout == "comfyui" else "lora_unet_"
        assert all(k.startswith(prefix) for k in converted)
        policy.pipe.load_lora_weights(dict(converted), adapter_name=layout)
        policy.pipe.set_adapters([layout])
        v = _velocity(policy)
        policy.pipe.delete_adapters([layout])
        torch.testing.assert_close(v, v_lora, rtol=1e-4, atol=1e-5, msg=f"{family} {layout}")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("flux", "flux-kontext")])
def test_original_layout_converts_back_through_diffusers_single_file_converter(family, family_dirs):
    from srpo.export.merge import read_transformer

    state = read_transformer(family_dirs[family] / "transformer")
    original = to_original_state_dict(family, state)
    back = _single_file_converter(family)(dict(original))
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k]), k


def _single_file_converter(family):
    from diffusers.loaders import single_file_utils as s

    return {"flux": s.convert_flux_transformer_checkpoint_to_diffusers,
            "flux2": s.convert_flux2_transformer_checkpoint_to_diffusers,
            "flux2-klein": s.convert_flux2_transformer_checkpoint_to_diffusers,
            "sd3": s.convert_sd3_transformer_checkpoint_to_diffusers,
            "z-image": s.convert_z_image_transformer_checkpoint_to_diffusers,
            "qwen-image": lambda checkpoint: checkpoint,
            "qwen-image-edit": lambda checkpoint: checkpoint,
            "qwen-image-edit-plus": lambda checkpoint: checkpoint}[family]


@pytest.fixture(scope="module")
def flux_dev_shapes():
    """FLUX.1-dev's transformer weight shapes (one double and one single block), built on the meta device."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_flux_original_layout_at_flux1_dev_widths(flux_dev_shapes):
    """FLUX.1-dev's names, widths and stacking order, on tensors of one column (values distinct per row)."""
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s[0], generator=gen) for k, s in flux_dev_shapes.items()}
    back = _single_file_converter("flux")(to_original_state_dict("flux", state))
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k]), k


def test_flux_fused_lora_at_flux1_dev_widths(flux_dev_shapes):
    """The single block's linear1 (q, k, v, mlp) and the double blocks' qkv split back exactly (kohya reader)."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    gen = torch.Generator().manual_seed(0)
    modules = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.add_v_proj",
               "single_transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.attn.to_v",
               "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_out", "norm_out.linear"]
    lora = {}
    for i, m in enumerate(modules):
        out, inp = flux_dev_shapes[f"{m}.weight"]
        r = 2 + i % 2  # unequal ranks: the zero padding is exercised
        lora[f"transformer.{m}.lora_A.weight"] = torch.randn(r, inp, generator=gen)
        lora[f"transformer.{m}.lora_B.weight"] = torch.randn(out, r, generator=gen)
    scales = {m: 0.5 + i for i, m in enumerate(modules)}
    for layout in ("kohya", "comfyui"):
        converted = lora_to_layout("flux", layout, lora, scales, flux_dev_shapes)
        back = peft_modules(_convert_kohya_flux_lora_to_diffusers(dict(converted)))
        for m in modules:  # the updates agree on random probes: B (A x), without forming [out, in]
            a, b = lora[f"transformer.{m}.lora_A.weight"], lora[f"transformer.{m}.lora_B.weight"]
            ra, rb = back[m]
            x = torch.randn(a.shape[1], 3, generator=gen)
            torch.testing.assert_close(rb @ (ra @ x), scales[m] * (b @ (a @ x)), rtol=1e-4, atol=1e-4)
        untouched = set(back) - set(modules)  # parts of a fused module the LoRA did not train come back as zero
        assert untouched and all(back[m][1].abs().max() == 0 or back[m][0].abs().max() == 0 for m in untouched)


def test_sd3_lora_layouts_match_the_original_checkpoint_names_and_shapes(family_dirs):
    """No diffusers reader converts SD3.5's non-diffusers LoRAs: every exported module must be a weight of the
    original checkpoint (the one diffusers' single-file converter reads) with the LoRA's shapes, and the merged
    original weight must equal base plus the exported LoRA's product."""
    from srpo.export.merge import read_transformer

    policy, lora, config = _policy_with_lora(family_dirs["sd3"])
    base = read_transformer(family_dirs["sd3"] / "transformer")
    original = to_original_state_dict("sd3", base)
    merged = to_original_state_dict("sd3", merge_lora(base, lora, config))
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    scales = module_scales(peft_modules(lora), config)
    for layout, prefix in (("kohya", "lora_unet_"), ("comfyui", "diffusion_model.")):
        converted = lora_to_layout("sd3", layout, lora, scales, shapes)
        names = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in converted}
        by_lora_name = {prefix + (k[:-len(".weight")].replace(".", "_") if layout == "kohya" else k[:-len(".weight")]): k
                        for k in original if k.endswith(".weight")}
        assert names <= set(by_lora_name), sorted(names - set(by_lora_name))[:3]
        assert any(".qkv" in by_lora_name[n] for n in names)  # fused modules are among them
        for n in names:
            down, up = converted[f"{n}.lora_down.weight"], converted[f"{n}.lora_up.weight"]
            scale = converted[f"{n}.alpha"].item() / down.shape[0]
            key = by_lora_name[n]
            assert up.shape[0] == original[key].shape[0] and down.shape[1] == original[key].shape[1]
            torch.testing.assert_close(original[key] + lora_delta(down, up, scale), merged[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_single_file_equals_base_plus_lora(family, family_dirs):
    """The merged single file, read back by diffusers' single-file converter, is base plus the LoRA's update."""
    from srpo.export.merge import read_transformer

    policy, lora, config = _policy_with_lora(family_dirs[family])
    base = read_transformer(family_dirs[family] / "transformer")
    merged = merge_lora(base, lora, config)
    scales = module_scales(peft_modules(lora), config)
    for m, (a, b) in peft_modules(lora).items():
        torch.testing.assert_close(merged[f"{m}.weight"], base[f"{m}.weight"] + lora_delta(a, b, scales[m]))
    from peft.tuners.lora import LoraLayer

    for name, module in policy.transformer.named_modules():  # peft's own update agrees
        if isinstance(module, LoraLayer):
            expected = module.get_base_layer().weight + module.get_delta_weight("default")
            torch.testing.assert_close(merged[f"{name}.weight"], expected.detach(), rtol=1e-5, atol=1e-6)
    if family not in ("flux", "flux-kontext"):  # FLUX.1's converter needs FLUX.1-dev's widths (its names: above)
        back = _single_file_converter(family)(to_original_state_dict(family, merged))
        assert set(back) == set(merged) and all(torch.equal(back[k], merged[k]) for k in merged)
    assert original_target(family, next(iter(peft_modules(lora)))).module != ""
