"""Shared measuring tools for the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import torch


def emit(result: dict, json_out: str | os.PathLike | None = None) -> None:
    """Print the benchmark's result as one JSON object on the last line of output.

    With ``json_out``, the same object is also written to that file (atomically: a kill leaves the
    previous version or the new one, never half a file), so a script that calls ``emit`` or
    :func:`write_json` as it goes keeps its partial result when a time limit stops it.
    """
    print(json.dumps(result, sort_keys=True), flush=True)
    if json_out:
        write_json(result, json_out)


def write_json(result: dict, path: str | os.PathLike) -> None:
    """Write ``result`` as one JSON object to ``path`` by a rename, so the file is never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, sort_keys=True) + "\n")
    os.replace(tmp, path)


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count, not the slower of them)."""
    return statistics.median(values)


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


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_counter():
    """``torch.utils.flop_counter.FlopCounterMode`` that also counts the CPU attention kernels.

    torch (2.14) has formulas for the CUDA flash / memory-efficient / cuDNN attention ops but not
    for ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward, which
    ``F.scaled_dot_product_attention`` runs on the CPU: without these entries a CPU count leaves
    attention out (0 FLOPs). Same formulas as torch's CUDA ones (Q K^T and A V; the backward
    recomputes the scores: 5 products), causal masks not discounted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that ``fn`` performs (matmuls, convolutions, attention), by torch's FLOP counter.

    Attention on the CPU is counted too (:func:`flop_counter`); elementwise work, norms and
    resampling are not (torch's counter has no formulas for them).
    """
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


def device_events(events) -> list:
    """The kernels (and device memory copies) among ``events`` of a CUDA profile: the events whose
    device time is the device's own.

    In a CUDA profile every kernel's time appears twice in ``key_averages()``: on the kernel's own
    event (device type CUDA) and as ``self_device_time_total`` of the CPU op that launched it
    (``aten::mm`` ...); and the device-side events of user annotations (``record_function``,
    torch.compile's regions) span the kernels inside them and carry their time a third time. Summing every event's device time would count
    the kernels two or three times; torch's own profiler table sums only device-type events that
    are not user annotations (``torch/autograd/profiler_util.py``), and so does this.
    """
    from torch.autograd import DeviceType

    return [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]


def launching_ops(events) -> list:
    """The CPU ops of a CUDA profile that launched kernels (their ``self_device_time_total`` is
    the time of those kernels), user annotations left out."""
    from torch.autograd import DeviceType

    return [e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "is_user_annotation", False)
            and e.self_device_time_total > 0]


def profile_once(fn: Callable[[], object], device: str, top: int = 12) -> dict:
    """One call of ``fn`` (after a warm-up call) under ``torch.profiler``: where its time went.

    On a GPU, ``kernel_seconds`` is the summed time of the kernels (:func:`device_events`: each
    kernel once) and ``busy_share`` that over the wall time: near 1 the kernels are the limit;
    well below 1 the host is (Python, dispatch, kernel launches: ``launches`` counts them).
    Kernels that overlap on several streams would be summed, so the share could pass 1; these
    benchmarks run one stream. ``top`` ranks the kernels, ``top_ops`` the CPU ops by the kernel
    time they launched (the same time, by op name). On the CPU the ops' own (self) time stands in
    for kernel time (each op's time once: a parent's self time excludes its children's), and
    ``top`` ranks the ops. The profiler adds overhead of its own, so ``wall_seconds`` runs above an
    unprofiled call's.
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
    result = {"wall_seconds": wall, "launches": sum(e.count for e in events if "LaunchKernel" in e.key)}
    result.update(summarise_profile(events, cuda, wall, top))
    return result


def summarise_profile(events, cuda: bool, wall: float, top: int = 12) -> dict:
    """``kernel_seconds``, ``busy_share``, ``top`` (and on CUDA ``top_ops``) of a profile's
    ``key_averages()``; see :func:`profile_once`."""
    if cuda:
        def rows(chosen) -> list[dict]:
            ranked = sorted(chosen, key=lambda e: e.self_device_time_total, reverse=True)[:top]
            return [{"op": e.key[:100], "seconds": e.self_device_time_total / 1e6, "calls": e.count} for e in ranked]

        kernels = device_events(events)
        busy = sum(e.self_device_time_total for e in kernels) / 1e6  # microseconds
        return {"kernel_seconds": busy, "busy_share": busy / wall, "top": rows(kernels),
                "top_ops": rows(launching_ops(events))}
    busy = sum(e.self_cpu_time_total for e in events) / 1e6
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"kernel_seconds": busy, "busy_share": busy / wall,
            "top": [{"op": e.key[:100], "seconds": e.self_cpu_time_total / 1e6, "calls": e.count} for e in ranked]}
