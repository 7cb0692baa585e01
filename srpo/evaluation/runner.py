"""The evaluation runner shared by ``srpo_training``'s ``evaluate`` step and ``srpo_evaluation``.

For each model (loaded one at a time), prompts are generated in batches with the paper's
protocol (one image per prompt, seed ``seed + index * seed_stride`` = ``42 + index * 1000``
where ``index`` is the prompt's index in the full benchmark, kept through subsets;
deterministic Euler on the shifted schedule, ``num_steps`` = 50 and guidance 3.5 by default),
each batch is rounded to 8 bits, saved as PNG and scored at once by every in-process metric
(so the scores are those of the saved files). External metrics (GenEval, DeQA) then score the
saved files. Every model sees the same prompts and the same initial noise, so differences
come from the weights only.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from srpo.evaluation.artifacts import EvalResults
from srpo.evaluation.benchmarks import Benchmark
from srpo.evaluation.config import EvalConfig, EvalReportConfig
from srpo.evaluation.images import save_png
from srpo.evaluation.metrics.base import Metric
from srpo.evaluation.results import refuse_non_finite, write_results
from srpo.evaluation.scoring import eval_seeds
from srpo.io import atomic_directory
from srpo.models.base import Policy
from srpo.noise import prompt_noise

log = logging.getLogger(__name__)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` images to 8 bits, as a saved PNG holds them."""
    return (images.clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def generate_batch(policy: Policy, prompts: list[str], seeds: list[int], gen: EvalConfig,
                   height: int, width: int) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in ``[0, 1]`` (CPU, 8-bit values) for ``prompts`` from ``seeds``."""
    eps = prompt_noise(policy, height, width, seeds)  # [B, C, h, w]
    cond = policy.encode_prompts(prompts)
    x0 = policy.rollout(cond, eps, gen.num_steps, gen.shift, gen.guidance)
    return quantize(policy.decode(x0).float().cpu())


def prompts_to_evaluate(bench: Benchmark, num_prompts: int | None) -> Benchmark:
    """``bench``, or its first ``num_prompts`` prompts when it has a single category.

    A prefix of a multi-category benchmark holds only its first categories (HPDv2: anime) yet
    would be reported as ``overall``, so that is refused; ``benchmark.per_category`` takes the
    same number of prompts from every category instead.
    """
    if num_prompts is None or num_prompts >= len(bench):
        return bench
    categories = bench.category_names()
    if len(categories) > 1:
        kept = list(dict.fromkeys(bench.categories[:num_prompts]))
        raise ValueError(f"evaluation.num_prompts = {num_prompts} would keep the first {num_prompts} of {len(bench)} "
                         f"prompts, which cover only {kept} of the categories {categories}, and report them as "
                         "overall: set benchmark.per_category to evaluate the first N prompts of every category, "
                         "or unset evaluation.num_prompts")
    return bench.subset(range(num_prompts))


def check_external_inputs(metrics: Mapping[str, Metric], models: list[str], bench: Benchmark) -> None:
    """Refuse, before any image is generated, external metrics that cannot score these models and prompts."""
    for metric in metrics.values():
        if metric.external:
            metric.check_models(models)
            metric.check_records(bench.records)


def run_evaluation(models: Mapping[str, Callable[[], Policy]], bench: Benchmark, metrics: Mapping[str, Metric],
                   gen: EvalConfig, report: EvalReportConfig, height: int, width: int, out_dir: Path) -> EvalResults:
    """Generate with every model, score with every metric, write an :class:`EvalResults` in ``out_dir``.

    Each prompt's seed comes from its benchmark index (``bench.indices``), which results.json's
    items and scores.csv record as ``index`` (images are ``images/<model>/<index:05d>.png``).
    """
    bench = prompts_to_evaluate(bench, gen.num_prompts)
    if len(bench) == 0:
        raise ValueError("no prompts to evaluate on: give a benchmark with prompts (or raise "
                         "prompts.heldout_fraction for srpo_training)")
    if not models:
        raise ValueError("no models to evaluate: give at least one")
    if not metrics:
        raise ValueError("no metrics configured: give at least one metric")
    check_external_inputs(metrics, list(models), bench)
    seeds = eval_seeds(bench.indices, gen)
    items = [{"index": i, "prompt": p, "category": c, "seed": s}
             for i, p, c, s in zip(bench.indices, bench.prompts, bench.categories, seeds)]
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as work:  # becomes out_dir only when everything worked
        _run(models, items, bench, metrics, gen, report, height, width, work)
    return EvalResults(out_dir)


def _run(models, items: list[dict], bench: Benchmark, metrics, gen, report, height, width,
         out_dir: Path) -> EvalResults:
    n = len(items)
    prompts, categories = bench.prompts, bench.categories
    seeds = [it["seed"] for it in items]
    internal = {k: m for k, m in metrics.items() if not m.external}
    external = {k: m for k, m in metrics.items() if m.external}
    scores: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, float] = {}
    layout = EvalResults(out_dir)  # where each image goes
    for model_name, load in models.items():
        if "/" in model_name or model_name in ("", ".", ".."):
            raise ValueError(f"model name {model_name!r} cannot be used as a folder name: use letters, digits, - and _")
        start = time.perf_counter()
        policy = load()
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in internal}
        paths: list[Path] = []
        for i in range(0, n, report.batch_size):
            batch = slice(i, min(i + report.batch_size, n))
            images = generate_batch(policy, prompts[batch], seeds[batch], gen, height, width)
            for j, img in enumerate(images):
                paths.append(save_png(img, layout.image_path(model_name, items[i + j]["index"])))
            for key, metric in internal.items():
                parts[key].append(metric.score_batched(images, prompts[batch]))
            log.info("%s: %d/%d prompts generated and scored", model_name, batch.stop, n)
        del policy
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        scores[model_name] = {k: torch.cat(v).tolist() for k, v in parts.items()}
        for key, metric in external.items():
            scores[model_name][key] = metric.score_files(paths, prompts, categories, indices=bench.indices,
                                                         records=bench.records, model=model_name)
        refuse_non_finite({model_name: scores[model_name]}, items)  # before the next model's generation
        timing[model_name] = time.perf_counter() - start
        log.info("evaluated %s in %.1f s", model_name, timing[model_name])
    meta = {"benchmark": bench.name, "num_steps": gen.num_steps, "guidance": gen.guidance, "shift": gen.shift,
            "seed": gen.seed, "seed_stride": gen.seed_stride, "height": height, "width": width,
            "seconds_per_model": timing}
    return write_results(out_dir, items, scores, report, meta)
