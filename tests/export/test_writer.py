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
