"""The benchmarks' measuring tools: profiler sums, FLOP counts, the issue's FLOP formula, JSON output."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.autograd.profiler_util import EventList, FunctionEvent

from benchmarks.common import count_flops, emit, flop_counter, median, profile_once, summarise_profile
from benchmarks.gpu_step import FLUX_SIZE, TINY, flux_flop_terms, flux_forward_flops


def _event(i, name, thread, start, end, **kwargs) -> FunctionEvent:
    return FunctionEvent(id=i, name=name, thread=thread, start_us=start, end_us=end, use_device="cuda", stack=[],
                         input_shapes=[], **kwargs)


def test_cuda_busy_time_counts_each_kernel_once():
    # What torch.profiler makes of a CUDA trace (torch/autograd/profiler.py): every kernel is an
    # event of its own (device type CUDA) and is also appended to the CPU op that launched it, whose
    # self device time it becomes; a compiled region is a user annotation on the CPU and again on
    # the device, spanning its kernels. 250 us of kernels: summing every event's device time gave 750.
    region = _event(1, "Torch-Compiled Region", 0, 0, 100, is_user_annotation=True)
    mm = _event(2, "aten::mm", 0, 10, 40)
    mm.append_kernel("gemm", 0, 200)
    add = _event(3, "aten::add", 0, 50, 60)
    add.append_kernel("add_kernel", 0, 50)
    kernels = [_event(4, "gemm", 7, 100, 300, device_type=DeviceType.CUDA),
               _event(5, "add_kernel", 7, 300, 350, device_type=DeviceType.CUDA)]
    gpu_region = _event(6, "Torch-Compiled Region", 7, 100, 350, device_type=DeviceType.CUDA, is_user_annotation=True)
    events = EventList([region, mm, add, *kernels, gpu_region], use_device="cuda")
    events._build_tree()  # parents and children by time, as the profiler does
    averages = events.key_averages()
    assert sum(e.self_device_time_total for e in averages) == 750  # the double (here triple) count
    summary = summarise_profile(averages, cuda=True, wall=1e-3)
    assert summary["kernel_seconds"] == pytest.approx(250e-6)
    assert summary["busy_share"] == pytest.approx(0.25)
    assert [row["op"] for row in summary["top"]] == ["gemm", "add_kernel"]  # kernels, no annotation
    assert [row["op"] for row in summary["top_ops"]] == ["aten::mm", "aten::add"]  # who launched them


def test_cpu_profile_counts_each_moment_once_and_sees_every_product():
    a = torch.randn(192, 192)

    def products():
        x = a
        for _ in range(6):
            x = torch.tanh(x @ a)
        return x

    result = profile_once(products, "cpu", top=50)
    rows = {row["op"]: row for row in result["top"]}
    assert rows["aten::mm"]["calls"] == 6 and rows["aten::tanh"]["calls"] == 6  # the computation's structure
    assert result["kernel_seconds"] > 0 and result["wall_seconds"] > 0
    # Each op's own (self) time once: the sum equals the time of the outermost ops, and it is the sum
    # of self times, not of total times, which count an op's children again: the profile has nested ops.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        products()
        wall = time.perf_counter() - start
    events = prof.events()
    outermost = sum(e.cpu_time_total for e in events if e.cpu_parent is None) / 1e6
    summary = summarise_profile(prof.key_averages(), cuda=False, wall=wall)
    assert summary["kernel_seconds"] == pytest.approx(outermost, rel=1e-6)
    assert summary["kernel_seconds"] == pytest.approx(sum(e.self_cpu_time_total for e in events) / 1e6, rel=1e-6)
    nested = [e for e in events if e.cpu_parent is not None]
    assert nested and {e.cpu_parent.name for e in nested} & {"aten::matmul", "aten::mm"}  # a matmul calls into mm


def test_cpu_attention_forward_and_backward_are_counted():
    b, h, s, d = 2, 3, 16, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert {"aten._scaled_dot_product_flash_attention_for_cpu",
            "aten._scaled_dot_product_flash_attention_for_cpu_backward"} <= ops  # the CPU kernel ran
    forward = 2 * (2 * b * h * s * s * d)  # Q K^T and A V
    backward = 5 * (2 * b * h * s * s * d)  # scores recomputed, dV, dA, dQ, dK
    assert counter.get_total_flops() == forward + backward
    # the same attention written out as products counts the same forward
    manual = count_flops(lambda: torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1) @ v)
    assert manual == forward


def test_the_issue_formula_follows_from_the_flux_config():
    p_tok, attention = flux_flop_terms(FLUX_SIZE)
    assert p_tok == pytest.approx(6.46e9, rel=1e-3) and attention == 57 * 4 * 3072
    tokens = 2025 + 512
    assert flux_forward_flops(tokens) == pytest.approx(2 * 6.46e9 * tokens + 57 * 4 * 3072 * tokens**2, rel=1e-3)
    assert flux_forward_flops(48, TINY) == 2 * 12 * 3 * 32**2 * 48 + 4 * 3 * 32 * 48**2
    # torch's FLOP counter agrees on FLUX.1's forward (meta tensors: shapes only, no arithmetic)
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX_SIZE)
        inputs = dict(hidden_states=torch.randn(1, 2025, 64), encoder_hidden_states=torch.randn(1, 512, 4096),
                      pooled_projections=torch.randn(1, 768), timestep=torch.ones(1), guidance=torch.ones(1),
                      img_ids=torch.zeros(2025, 3), txt_ids=torch.zeros(512, 3))
    counted = count_flops(lambda: model(**inputs, return_dict=False))
    assert counted == pytest.approx(flux_forward_flops(tokens), rel=2e-3)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5 and median([3.0, 1.0, 2.0]) == 2.0


def test_emit_prints_the_object_last_and_writes_the_same_to_a_file(tmp_path, capsys):
    path = tmp_path / "out" / "result.json"
    emit({"a": 1, "partial": True}, path)
    emit({"a": 2}, path)  # replaced whole
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"a": 2}
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left


# each family at its real width with few blocks: the formula's per-block terms dominate, embedders do not
FEW_BLOCKS = {"qwen-image": dict(num_layers=2), "sd3": dict(num_layers=2),
              "flux2": dict(num_layers=1, num_single_layers=2), "flux2-klein": dict(num_layers=1, num_single_layers=2),
              "z-image": dict(n_layers=2, n_refiner_layers=1)}


@pytest.mark.parametrize("family", sorted(FEW_BLOCKS))
def test_each_familys_forward_formula_matches_torchs_count_on_the_meta_device(family):
    """``flop_terms`` from the config against torch's counter: within the embedders' and norms' share."""
    from benchmarks.family_sizes import (REAL_SIZES, build_transformer, family_config, first_output, flop_terms,
                                         forward_inputs, image_tokens)

    config = {**family_config(family), **FEW_BLOCKS[family]}
    transformer = build_transformer(family, config)
    args, kwargs = forward_inputs(family, config, 512, 128)
    with flop_counter() as counter:
        out = first_output(transformer(*args, **kwargs))
    assert out.shape[0] == 1 and out.device.type == "meta"
    p_tok, attention = flop_terms(family, config)
    tokens = image_tokens(family, config, 512) + 128
    formula = 2 * p_tok * tokens + attention * tokens**2
    assert formula == pytest.approx(counter.get_total_flops(), rel=0.12)
    assert REAL_SIZES[family]["source"]  # every real size says where it came from


def test_family_counts_and_the_timed_family_step_run_tiny_on_the_cpu():
    """``gpu_step --family``: the meta-device counts and the timed path, on a tiny SD3 (real block structure)."""
    import argparse

    from benchmarks.gpu_step import family_counted_flops, family_step

    counts = family_counted_flops("sd3", tiny=True)
    assert counts["transformer_forward_backward_lora"] > counts["transformer_forward"] > 0
    assert counts["update_counted_formula"] == 6 * counts["transformer_forward_formula"]
    args = argparse.Namespace(family="sd3", tiny=True, size=None, repeats=1)
    timed = family_step(args, "cpu", torch.float32)
    assert timed["rollout_seconds_per_step"] > 0 and timed["train_seconds_per_update_transformer_only"] > 0
    assert timed["forward_flops"] == counts["transformer_forward_formula"]
    assert timed["train_mfu_transformer_only"] == pytest.approx(
        6 * timed["forward_flops"] / timed["train_seconds_per_update_transformer_only"] / timed["peak_flops"])
    assert 0 < timed["lora_params"] < timed["transformer_params"]
