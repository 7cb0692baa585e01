"""The training benchmarks run on the CPU and end with one JSON object carrying the issue's keys."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# runpy warns when it runs as __main__ a module that a test imported before (step_cost): harmless here
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")


@pytest.fixture
def run_benchmark(monkeypatch, capsys):
    """``python -m benchmarks.<name> ARGS``, run in this process as ``python -m`` runs it (its ``__main__`` block
    with these arguments; the imports are paid once, not per benchmark): the JSON object on its last line.

    step_cost still starts a fresh interpreter per method (``--method``), and gpu_step runs in one of its own
    (:func:`run_command`: in the test's process it ran slower, 25 s against 19 s on 2026-12-08, cause not found)."""
    def run(module: str, *args: str) -> dict:
        monkeypatch.setattr(sys, "argv", [module, *args])
        capsys.readouterr()  # drop what came before
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return run


def run_command(*args: str) -> dict:
    """``python -m ARGS`` in a fresh interpreter: the JSON object on its last line of output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_step_cost_reports_flops_seconds_and_the_share_of_the_matmul_peak(run_benchmark):
    # each method is a process of its own (its own peak memory): two here, fused branches are
    # tests/training/test_trainer.py's (the same update from half the model calls)
    result = run_benchmark("benchmarks.step_cost", "--quick", "--methods", "direct_align", "--repeats", "1")
    by_name = {m["name"]: m for m in result["methods"]}
    assert set(by_name) == {"direct_align", "srpo"}  # srpo is always measured: the share is its own
    # The inversion branch repeats the transformer, VAE and reward work; the prompts are encoded once.
    da, srpo = by_name["direct_align"]["gflops_per_update"], by_name["srpo"]["gflops_per_update"]
    assert 1.5 * da < srpo <= 2 * da
    assert all(m["seconds_per_update"] > 0 and m["peak_rss_mb"] > 0 for m in result["methods"])
    assert result["peak_gflops"] == max(result["peak_gflops_before_after"]) > 0
    assert result["achieved_share"] == by_name["srpo"]["achieved_gflops"] / result["peak_gflops"]


def test_step_cost_rejects_an_unknown_method_by_name(monkeypatch, capsys):
    from benchmarks import step_cost

    monkeypatch.setattr(sys, "argv", ["step_cost", "--methods", "draft_k"])  # its command line, in this process
    with pytest.raises(SystemExit) as exit_:
        step_cost.main()
    stderr = capsys.readouterr().err
    assert exit_.value.code != 0 and "draft_k" in stderr and "full_chain" in stderr


def test_gpu_step_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_step.json"
    result = run_command("benchmarks.gpu_step", "--tiny", "--repeats", "1", "--rollout-batch", "2", "--profile",
                         "--json-out", str(out))
    assert json.loads(out.read_text()) == result  # the file holds the final object, not a partial one
    assert "partial" not in result
    assert result["device"] == "cpu" and result["tiny"] and result["rollout_batch"] == 2
    # also timed: the branches as one batch, and the VAE channels-last
    assert result["eager"]["train_seconds_per_update_fused"] > 0
    assert result["eager"]["train_seconds_per_update_vae_channels_last"] > 0
    profile = result["eager"]["profile_update"]  # where the time went (CPU: the ops' own time)
    assert 0 < profile["kernel_seconds"]
    assert profile["busy_share"] == profile["kernel_seconds"] / profile["wall_seconds"]
    assert profile["top"] and any(row["op"] in ("aten::mm", "aten::addmm") for row in profile["top"])
    assert result["eager"]["rollout_images_per_second"] == 2 / result["eager"]["rollout_seconds_per_step"]
    assert result["eager"]["rollout_seconds_per_step"] > 0 and result["eager"]["train_seconds_per_update"] > 0
    assert 0 < result["lora_params"] < result["transformer_params"]
    # MFU at any size: the formula from the tiny config, against the CPU's measured peak
    from benchmarks.gpu_step import TINY, flux_forward_flops

    fwd, peak, eager = result["forward_flops"], result["peak_flops"], result["eager"]
    assert fwd == flux_forward_flops(result["tokens"], TINY) and peak > 0
    assert eager["rollout_mfu"] == pytest.approx(2 * fwd / eager["rollout_seconds_per_step"] / peak)
    for suffix in ("", "_fused", "_vae_channels_last"):
        assert eager[f"train_mfu{suffix}"] == pytest.approx(6 * fwd / eager[f"train_seconds_per_update{suffix}"] / peak)
    # the FLOPs the MFU leaves out, counted on the meta device: VAE decode and reward tower
    flops = result["flops"]
    parts = ("vae_decode_forward", "vae_decode_backward", "reward_forward", "reward_backward")
    assert all(flops[k] > 0 for k in parts) and flops["decode_reward"] == sum(flops[k] for k in parts)
    assert flops["transformer_forward_formula"] == fwd and flops["transformer_forward"] > 0
    assert flops["transformer_forward_backward_lora"] > flops["transformer_forward"]
    assert flops["decode_reward_share_of_counted"] == pytest.approx(
        flops["decode_reward"] / (flops["decode_reward"] + 3 * fwd))


def test_trainer_step_times_the_trainer_with_a_bf16_base_under_autocast(run_benchmark, tmp_path):
    out = tmp_path / "trainer_step.json"
    result = run_benchmark("benchmarks.trainer_step", "--tiny", "--autocast", "--updates", "1", "--fuse-branches",
                           "--json-out", str(out))
    assert json.loads(out.read_text()) == result and "partial" not in result
    assert result["train_mfu"] == pytest.approx(6 * result["forward_flops"] / result["train_seconds_per_update"]
                                                / result["peak_flops"])
    assert result["fuse_branches"] and result["skipped_updates"] == 0
    assert result["base_dtype"] == result["frozen_dtype"] == "torch.bfloat16"
    assert result["train_seconds_per_update"] > 0 and result["rollout_seconds_per_step"] > 0
    assert 0 < result["lora_params"] < result["transformer_params"]


def test_reward_backward_times_both_attention_layouts_at_batch_one_and_two(run_benchmark):
    result = run_benchmark("benchmarks.reward_backward", "--quick", "--repeats", "1")
    assert set(result["layouts"]) == {"batch_first", "sequence_first"} and result["blocks"] == 2
    for entry in result["layouts"].values():
        assert entry["seconds_batch_1"] > 0 and entry["seconds_batch_2"] > 0
        assert entry["slowdown_at_batch_2"] == entry["seconds_batch_2"] / 2 / entry["seconds_batch_1"]


def test_reward_cost_reports_time_flops_and_size_of_every_reward(run_benchmark):
    result = run_benchmark("benchmarks.reward_cost", "--quick", "--size", "64")
    assert set(result["rewards"]) == {"hpsv2.1", "pickscore", "hpsv3", "aesthetic_v2.5"}
    for entry in result["rewards"].values():
        assert entry["seconds_per_image"] > 0 and entry["flops_per_image"] > 0 and entry["parameters"] > 0
