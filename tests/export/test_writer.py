"""export_model writes every format from a trained LoRA folder, with metadata, a card, atomically."""

from __future__ import annotations


import pytest
import torch

from srpo.export.card import CardInfo, md
from srpo.export.writer import export_model


@pytest.fixture(scope="module")
def lora_folder(family_dirs, tmp_path_factory):
    """A LoRA on tiny FLUX.2 saved as training saves it (pytorch_lora_weights.safetensors + adapter config)."""
    from srpo.models.families import load_policy_for
    from srpo.training.lora import add_lora, save_lora

    policy = load_policy_for(str(family_dirs["flux2"]))
    add_lora(policy.transformer, 4, 8.0, list(policy.lora_targets), seed=1)
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("lora")
    save_lora(policy, policy.transformer, out)
    return out


def _card(**kw):
    return CardInfo(model="srpo <img src=x> version 3", base_model="builtin:tiny-flux2", family="flux2",
                    licence=None, method="srpo", steps=5, finetune="lora",
                    config={"note": "```\n<script>alert(1)</script>"}, lineage_command="python -m ops.lineage srpo 3",
                    evaluation={"means": {"base": {"reward": 0.1}, "tuned": {"reward": 0.2}}}, **kw)


def test_every_format_has_metadata_a_card_and_loads(lora_folder, family_dirs, tmp_path):
    from diffusers import Flux2Transformer2DModel
    from safetensors import safe_open

    base = str(family_dirs["flux2"])
    for fmt in ("diffusers", "single-file", "comfyui", "kohya"):
        out = tmp_path / fmt
        export_model(lora_folder, "lora", base, fmt, str(out), _card())
        files = sorted(p for p in out.rglob("*.safetensors"))
        assert files, fmt
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                meta = h.metadata()
            assert meta["base_model"] == base and meta["family"] == "flux2" and fmt.split("-")[0] in meta["format"]
        card = (out / "README.md").read_text()
        assert "<script>" not in card and "<img" not in card and "| tuned | 0.2000 |" in card
    model = Flux2Transformer2DModel.from_pretrained(tmp_path / "diffusers" / "transformer")
    with safe_open(str(tmp_path / "comfyui" / "lora_comfyui.safetensors"), framework="pt") as h:
        assert all(k.startswith("diffusion_model.") for k in h.keys())
    with safe_open(str(tmp_path / "kohya" / "lora_kohya.safetensors"), framework="pt") as h:
        assert any(k.startswith("lora_unet_double_blocks_0_img_attn_qkv") for k in h.keys())
    assert sum(p.numel() for p in model.parameters()) > 0


def test_remote_destination_and_refusals_leave_nothing(lora_folder, family_dirs, tmp_path):
    import fsspec

    export_model(lora_folder, "lora", str(family_dirs["flux2"]), "kohya", "memory://exports/w1", _card())
    fs = fsspec.filesystem("memory")
    assert fs.exists("/exports/w1/README.md") and fs.exists("/exports/w1/lora_kohya.safetensors")
    out = tmp_path / "full"
    with pytest.raises(ValueError, match="'kohya' is a LoRA layout"):
        export_model(lora_folder, "diffusers-transformer", str(family_dirs["flux2"]), "kohya", str(out), _card())
    with pytest.raises(ValueError, match="not one of"):
        export_model(lora_folder, "lora", str(family_dirs["flux2"]), "gguf", str(out), _card())
    assert not out.exists()


def test_markdown_escaping_is_inert():
    assert md("[x](http://e) | <b>") == "\\[x\\]\\(http://e\\) \\| &lt;b&gt;"


@pytest.mark.parametrize("family", ["flux-kontext", "qwen-image-edit", "qwen-image-edit-plus"])
def test_edit_family_exports_load_through_their_pipelines(family, family_dirs, tmp_path):
    """An edit model's diffusers export: its pipeline (FluxKontextPipeline, QwenImageEdit(Plus)Pipeline) loads the
    merged transformer with from_pretrained and the LoRA with load_lora_weights, and both edit a source as the
    trained LoRA does."""
    from srpo.models.families import load_policy_for
    from srpo.training.lora import add_lora, save_lora

    base = str(family_dirs[family])
    trained = load_policy_for(base)
    add_lora(trained.transformer, 4, 8.0, list(trained.lora_targets), seed=1)
    with torch.no_grad():
        for name, p in trained.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    save_lora(trained, trained.transformer, tmp_path / "lora-run")
    export_model(tmp_path / "lora-run", "lora", base, "diffusers", str(tmp_path / "out"), _card())

    def edit_velocity(policy):
        torch.manual_seed(0)
        c, h, w = policy.latent_shape(64, 64)
        x = torch.randn(1, c, h, w)
        source = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
        cond = policy.encode_prompts(["make the circle red"], policy.encode_sources(source))
        with torch.no_grad():
            return policy.velocity(x, torch.tensor([0.7]), cond, policy.default_guidance)

    expected = edit_velocity(trained)
    merged = load_policy_for(base, transformer=str(tmp_path / "out" / "transformer"))
    lora = load_policy_for(base, transformer=str(tmp_path / "out" / "lora"))
    for policy in (merged, lora):
        assert type(policy.pipe).__name__ == trained.pipeline_class and policy.family == family
    assert (expected - edit_velocity(load_policy_for(base))).abs().max() > 1e-3  # the LoRA changes the edit
    torch.testing.assert_close(edit_velocity(merged), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(edit_velocity(lora), expected, rtol=1e-4, atol=1e-5)
