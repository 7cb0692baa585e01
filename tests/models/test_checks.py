"""srpo.models.checks: policy settings that do not fit the model folder are refused before any weight is read."""

from __future__ import annotations

import pytest
import torch

from srpo.config import PolicyConfig, TrainConfig
from srpo.models import checks
from srpo.models.families import FAMILIES, adapter_class, load_policy_for


def no_weights(*args, **kwargs):
    raise AssertionError("a model was loaded before the check")


@pytest.mark.parametrize("family", ["flux", "sd3", "flux2"])
def test_the_width_read_on_the_meta_device_is_the_loaded_models_smallest_targeted_layer(family, family_dirs):
    """The meta-device width equals min(in, out) over the loaded policy's LoRA-targeted Linear layers."""
    folder = str(family_dirs[family])
    found = checks.transformer_config(folder, None)
    assert found is not None and found[0] == family
    meta = checks.meta_transformer(*found)
    width, name, _ = checks.smallest_lora_width(meta, adapter_class(family).lora_targets_for(meta))
    policy = load_policy_for(folder)
    real = [min(m.in_features, m.out_features) for n, m in policy.transformer.named_modules()
            if isinstance(m, torch.nn.Linear) and any(n == t or n.endswith("." + t) for t in policy.lora_targets)]
    assert width == min(real) and name


def test_a_lora_rank_above_the_smallest_targeted_layer_is_refused_with_that_width(family_dirs, monkeypatch):
    folder = str(family_dirs["flux"])
    meta = checks.meta_transformer(*checks.transformer_config(folder, None))
    width, name, _ = checks.smallest_lora_width(meta, adapter_class("flux").lora_targets_for(meta))
    monkeypatch.setattr("diffusers.FluxPipeline.from_pretrained", no_weights)
    policy = PolicyConfig(pretrained=folder)
    with pytest.raises(ValueError) as err:
        checks.check_policy(policy, TrainConfig(finetune="lora", lora_rank=100000))
    first = str(err.value).splitlines()[0]
    assert first.startswith("train.lora_rank = 100000 is above the width"), first
    assert f"{name}:" in first and f"set train.lora_rank to at most {width}" in first, first
    checks.check_policy(policy, TrainConfig(finetune="lora", lora_rank=width))  # the width itself fits
    checks.check_policy(policy, TrainConfig(finetune="full", lora_rank=100000))  # full fine-tuning: unused
    with pytest.raises(ValueError, match=r"^train.lora_targets = \['no_such_layer'\] match no Linear layer"):
        checks.check_policy(policy, TrainConfig(finetune="lora", lora_targets=["no_such_layer"]))
    narrow = ["norm.linear"]  # explicit targets: their own smallest width decides
    w, _, _ = checks.smallest_lora_width(meta, narrow)
    with pytest.raises(ValueError, match=rf"at most {w}\b"):
        checks.check_policy(policy, TrainConfig(finetune="lora", lora_targets=narrow, lora_rank=w + 1))


def test_a_published_hub_id_is_checked_from_its_published_config_without_downloading():
    """FLUX.1-dev (a hub id, offline here): the family's ``proj_out`` target also matches the final
    projection to the 64 packed latent channels (3072 -> 64), the narrowest targeted layer."""
    policy = PolicyConfig(pretrained="black-forest-labs/FLUX.1-dev", family="flux")
    with pytest.raises(ValueError, match=r"^train.lora_rank = 65 .*\(proj_out: 3072 -> 64, width 64\): set train.lora_rank to at most 64"):
        checks.check_lora_rank(policy, TrainConfig(finetune="lora", lora_rank=65))
    checks.check_lora_rank(policy, TrainConfig(finetune="lora", lora_rank=64))
    checks.check_lora_rank(PolicyConfig(pretrained="someone/unknown-model"), TrainConfig(finetune="lora", lora_rank=10**6))


def test_a_family_that_is_not_the_folders_is_refused_naming_the_pipeline_and_its_family(family_dirs, monkeypatch):
    folder = str(family_dirs["flux"])
    monkeypatch.setattr("diffusers.StableDiffusion3Pipeline.from_pretrained", no_weights)
    for call in (lambda: checks.check_policy(PolicyConfig(pretrained=folder, family="sd3"), TrainConfig()),
                 lambda: load_policy_for(folder, "sd3")):  # the loader checks too, before diffusers
        with pytest.raises(ValueError) as err:
            call()
        first = str(err.value).splitlines()[0]
        assert first.startswith("policy.family = 'sd3', but ") and "is a FluxPipeline" in first, first
        assert "which is family 'flux': set policy.family: flux or leave it out" in first, first
    checks.check_policy(PolicyConfig(pretrained=folder, family="flux"), TrainConfig())  # the right family passes
    assert set(FAMILIES) >= {"flux", "sd3"}
