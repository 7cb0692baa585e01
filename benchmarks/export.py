"""Export cost of a FLUX.1-size LoRA into each layout: seconds and peak memory.

    python -m benchmarks.export [--rank 16] [--json-out docs/benchmarks/export.json]

The LoRA sits on FLUX.1-dev's default targets (``srpo.models.flux.LORA_TARGETS``: 19 double and
38 single blocks at FLUX.1-dev's widths, shapes read from the transformer built on the meta
device), rank and alpha as in ``TrainConfig`` (16 and 16, as ``configs/*_hps_1gpu.yaml``), random weights in bfloat16
on the CPU. Each layout runs in a fresh process (so each peak is its own): convert with
:func:`srpo.export.layouts.lora_to_layout` (``diffusers``: as it is) and write the safetensors
file with its metadata. ``peak_rss_mib`` is the process's peak; ``extra_peak_mib`` the peak
above the LoRA's own footprint. The merged single file is not measured: it is dominated by reading
and writing the 12 B-parameter base (24 GB in bfloat16). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import resource
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine


def flux_lora(rank: int, seed: int = 0) -> tuple[dict, dict]:
    """A random LoRA on FLUX.1-dev's default targets; ``(peft state dict, base weight shapes)``."""
    from diffusers import FluxTransformer2DModel

    from srpo.models.flux import LORA_TARGETS

    with torch.device("meta"):
        model = FluxTransformer2DModel(guidance_embeds=True)  # FLUX.1-dev's config: 19 + 38 blocks, width 3072
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in LORA_TARGETS):
            out, inp = module.weight.shape
            lora[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, inp, generator=gen).to(torch.bfloat16)
            lora[f"transformer.{name}.lora_B.weight"] = (torch.randn(out, rank, generator=gen) * 0.01).to(torch.bfloat16)
    return lora, shapes


def _mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one(layout: str, rank: int, alpha: float, queue) -> None:
    from safetensors.torch import save_file

    from srpo.export.layouts import lora_to_layout, module_scales, peft_modules

    lora, shapes = flux_lora(rank)
    before = _mib()
    start = time.perf_counter()
    config = {"r": rank, "lora_alpha": alpha}
    if layout == "diffusers":
        out = lora
    else:
        out = lora_to_layout("flux", layout, lora, module_scales(peft_modules(lora), config), shapes)
    converted = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lora.safetensors"
        save_file(out, str(path), metadata={"format": layout, "base_model": "black-forest-labs/FLUX.1-dev"})
        size = path.stat().st_size
    done = time.perf_counter()
    queue.put({"layout": layout, "tensors": len(out), "file_mib": size / 2**20,
               "convert_seconds": converted - start, "write_seconds": done - converted, "seconds": done - start,
               "lora_params": sum(v.numel() for v in lora.values()), "rss_before_mib": before,
               "peak_rss_mib": _mib(), "extra_peak_mib": _mib() - before,
               "fused_modules": sum(1 for k in out if re.search(r"(qkv|linear1)\.lora_(down|A)", k))})


def main(argv=None) -> dict:
    from srpo.config import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=defaults.lora_rank)
    parser.add_argument("--alpha", type=float, default=defaults.lora_alpha)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for layout in ("diffusers", "comfyui", "kohya"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_one, args=(layout, args.rank, args.alpha, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
        print(f"{layout}: {rows[-1]['seconds']:.2f} s, peak {rows[-1]['peak_rss_mib']:.0f} MiB "
              f"(+{rows[-1]['extra_peak_mib']:.0f} over the LoRA), {rows[-1]['file_mib']:.0f} MiB file", flush=True)
    result = {"benchmark": "export", "model": "FLUX.1-dev transformer (meta shapes)", "rank": args.rank,
              "alpha": args.alpha, "dtype": "bfloat16", "rows": rows, "machine": machine()}
    emit(result, args.json_out)
    return result


if __name__ == "__main__":
    main()
