"""Every family's real-size update on fake tensors: shapes, packing, position ids and dtypes of the real models.

One pass builds each family at its published size (FLUX.2 [dev]: 32 B parameters), counts its parameters,
keeps ``DEPTH`` blocks of each block list (the first and the last: every width, head, position id and the last
block's special form stay the published ones; ``benchmarks.real_size.keep_blocks``) and runs one SRPO
update (both branches, fused into one micro-step to halve the cost, from a stored rollout; the
separate micro-steps and the Euler rollout step are ``python -m benchmarks.real_size``'s) and one
GRPO update (its SDE sampler step, then the log-probability with grad) on fake tensors: no memory,
a few seconds of CPU per family. The expected shapes below are written from each model's published geometry, not
read from the adapters under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import real_size

#: family -> (latent channels, pixels per latent cell) of the policy's unpacked latent, from the models'
#: published VAEs: FLUX.1 / SD3.5 / Z-Image / Qwen-Image 16 channels at x8; FLUX.2's 32-channel x8 VAE
#: patchified 2x2 into 128 channels at x16.
LATENT = {"flux": (16, 8), "qwen-image": (16, 8), "sd3": (16, 8), "flux2": (128, 16), "flux2-klein": (128, 16),
          "z-image": (16, 8)}
#: Parameter counts of the published transformers (billions, rounded): the real size was built.
BILLIONS = {"flux": 11.9, "qwen-image": 20.4, "sd3": 8.1, "flux2": 32.2, "flux2-klein": 3.9, "z-image": 6.2}

#: Blocks kept of each block list for the fake-tensor updates (the full depth repeats the same blocks).
DEPTH = 2


def unused(family: str, tiny: bool = False, depth: int | None = None) -> list[str]:
    """LoRA parameters whose output never reaches the image: Qwen-Image's last block still computes a text stream
    (its attention output projection and MLP) that the model then drops; every other adapted layer gets a gradient."""
    if family != "qwen-image":
        return []
    last = (real_size.TINY_TRANSFORMER[family]["num_layers"] if tiny else depth or 60) - 1
    return [f"transformer_blocks.{last}.{module}.lora_{ab}.default.weight"
            for module in ("attn.to_add_out", "txt_mlp.net.0.proj", "txt_mlp.net.2") for ab in "AB"]


@pytest.fixture(scope="module")
def runs():
    # SRPO from a stored rollout (the trainer's first update): GRPO's SDE step is the rollout step exercised here
    return real_size.run_families(real_size.FAMILIES, device="fake", fuse_branches=True, with_plan=False,
                                  rollout_step=False, depth=DEPTH)["families"]


@pytest.mark.parametrize("family", real_size.FAMILIES)
def test_one_srpo_update_at_real_size(runs, family):
    run = runs[family]
    assert "error" not in run, run.get("error")
    height, width = run["resolution"]
    assert (height, width) == (real_size.real_config(family).policy.height, real_size.real_config(family).policy.width)
    assert round(run["transformer_params"] / 1e9, 1) == BILLIONS[family]
    channels, factor = LATENT[family]
    latent = [channels, height // factor, width // factor]
    srpo = run["srpo"]
    assert srpo["x0"] == [1, *latent]
    assert srpo["x0_hat_denoise+inversion"] == [2, *latent]  # both branches recovered
    assert srpo["images_denoise+inversion"] == [2, 3, height, width] and srpo["images_dtype"] == "float32"
    assert srpo["reward_denoise"] == srpo["reward_inversion"] == [1]
    # every LoRA parameter (fp32 master weights over the bf16 base) got an fp32 gradient of its shape and moments
    assert srpo["trainable"] > 0 and srpo["param_dtypes"] == srpo["grad_dtypes"] == ["float32"]
    assert run["blocks_kept"] and set(run["blocks_kept"].values()) == {DEPTH}  # the deep block lists were cut
    dropped = unused(family, depth=DEPTH)
    assert srpo["grads_of_param_shape"] == srpo["moments_of_param_shape"] == srpo["trainable"] - len(dropped)
    assert sorted(srpo["without_grad"]) == sorted(dropped)
    saved = srpo["saved_bytes"]  # what autograd kept for the backward: the activations
    assert saved["transformer"] > saved["transformer_checkpointed"] > 0 and saved["vae"] > 0 and saved["reward"] > 0


@pytest.mark.parametrize("family", real_size.FAMILIES)
def test_the_transformer_sees_the_real_token_layout(runs, family):
    inputs = runs[family]["srpo"]["transformer_inputs"]
    height, width = runs[family]["resolution"]
    tokens, text = (height // 16) * (width // 16), runs[family]["text_tokens"]
    batch = 2  # the fused branches
    if family in ("flux", "qwen-image"):  # 2x2 packing: one token per 16 px, 64 channels
        assert inputs["hidden_states"]["shape"] == [batch, tokens, 64]
        assert inputs["encoder_hidden_states"]["shape"][:2] == [batch, text]
    if family == "flux":  # FLUX.1's 3-axis position ids
        assert inputs["img_ids"]["shape"] == [tokens, 3] and inputs["txt_ids"]["shape"] == [text, 3]
        assert inputs["pooled_projections"]["shape"] == [batch, 768]
    if family.startswith("flux2"):  # one token per latent cell, 4-axis ids per sample
        assert inputs["hidden_states"]["shape"] == [batch, tokens, 128]
        assert inputs["img_ids"]["shape"] == [batch, tokens, 4] and inputs["txt_ids"]["shape"] == [batch, text, 4]
    if family == "sd3":  # unpacked latents into its own patch embedding
        assert inputs["hidden_states"]["shape"] == [batch, 16, height // 8, width // 8]
        assert inputs["pooled_projections"]["shape"] == [batch, 2048]
    if family == "z-image":  # lists: one [C, 1, h, w] latent and one unpadded caption per sample
        assert [x["shape"] for x in inputs["args.0"]] == [[16, 1, height // 8, width // 8]] * batch
        assert [x["shape"] for x in inputs["args.2"]] == [[text, 2560]] * batch


@pytest.mark.parametrize("family", real_size.FAMILIES)
def test_one_grpo_update_at_real_size(runs, family):
    run, cfg = runs[family], real_size.real_config(family)
    height, width = run["resolution"]
    channels, factor = LATENT[family]
    group, micro = cfg.grpo.group_size, cfg.grpo.micro_batch or cfg.grpo.group_size
    grpo = run["grpo"]
    assert grpo["chain"] == [2, group, channels, height // factor, width // factor]  # one SDE step of the group
    assert grpo["chain_dtype"] == "float32"  # the velocity ran in bf16 autocast; the latents stay fp32
    assert grpo["old_log_prob"] == grpo["rewards"] == grpo["advantages"] == [group]
    assert grpo["log_prob"] == grpo["ratio"] == [micro]  # the step's log-probability with grad: a [B] tensor
    dropped = unused(family, depth=DEPTH)
    assert grpo["grads_of_param_shape"] == grpo["moments_of_param_shape"] == grpo["trainable"] - len(dropped)
    assert grpo["saved_bytes"]["transformer"] > 0 and grpo["saved_bytes"]["vae"] == 0  # the reward had no grad


#: The device path's code is the same for every family (the fake-tensor tests above cover each family's own
#: shapes); two families keep the smoke run short: FLUX.1 and Qwen-Image (true CFG, unused last-block adapters).
TWO_FAMILIES = ["--family", "flux", "--family", "qwen-image"]


def test_the_device_path_runs_tiny_on_the_cpu(tmp_path):
    """benchmarks/device_session.sh's per-family GPU check, on the CPU at tiny size with real tensors."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "real_size.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.real_size", "--device", "cpu", "--tiny", "--method", "srpo",
                           "--repeats", "1", "--json-out", str(out), *TWO_FAMILIES], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(root)), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == result and "partial" not in result
    assert set(result["families"]) == {"flux", "qwen-image"}
    for family, entry in result["families"].items():
        assert "error" not in entry, (family, entry.get("error"))
        srpo = entry["srpo"]
        assert srpo["seconds_per_update"] > 0 and srpo["peak_flops"] > 0
        assert srpo["mfu"] == pytest.approx(srpo["update_flops"] / srpo["seconds_per_update"] / srpo["peak_flops"])
        assert sorted(srpo["without_grad"]) == sorted(unused(family, tiny=True))
        assert srpo["grads_of_param_shape"] == srpo["trainable"] - len(srpo["without_grad"]) > 0
        assert entry["checkpointing"]  # the configs' per-block checkpointing, as the GPU run uses it


def test_real_config_refuses_a_family_without_a_config(tmp_path):
    with pytest.raises(ValueError, match="no real SRPO config of family 'flux'"):
        real_size.real_config("flux", configs=tmp_path)
