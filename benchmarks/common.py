"""Shared measuring tools for the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable

import torch


def emit(result: dict) -> None:
    """Print the benchmark's result as one JSON object on the last line of output."""
    print(json.dumps(result, sort_keys=True), flush=True)


def machine() -> dict:
    info = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]  # other work on shared cores skews timings
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def time_it(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: bool = False) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu", dtype=torch.float32) -> float:
    """Best achieved GFLOP/s of an n x n x n matmul: this machine's practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_it(lambda: a @ b, repeats, warmup=3, sync=device != "cpu")
    return 2 * n**3 / min(times) / 1e9


def cpu_matmul_peak_gflops(sizes: tuple[int, ...] = (1024, 2048, 4096)) -> float:
    """The best fp32 matmul rate over a few sizes: a conservative (high) denominator for shares."""
    return max(matmul_peak_gflops(n) for n in sizes)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that ``fn`` performs (matmuls, convolutions, attention), by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def profile_once(fn: Callable[[], object], device: str, top: int = 12) -> dict:
    """One call of ``fn`` (after a warm-up call) under ``torch.profiler``: where its time went.

    On a GPU, ``busy_share`` is the summed kernel time over the wall time: near 1 the kernels are
    the limit; well below 1 the host is (Python, dispatch, kernel launches: ``launches`` counts
    them). On the CPU the ops' own time stands in for kernel time. The profiler adds overhead
    of its own, so ``wall_seconds`` runs above an unprofiled call's.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    own = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)  # microseconds
    busy = sum(own(e) for e in events) / 1e6
    ranked = sorted(events, key=own, reverse=True)[:top]
    return {"wall_seconds": wall, "kernel_seconds": busy, "busy_share": busy / wall,
            "launches": sum(e.count for e in events if "LaunchKernel" in e.key),
            "top": [{"op": e.key[:100], "seconds": own(e) / 1e6, "calls": e.count} for e in ranked]}
