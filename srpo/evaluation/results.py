"""Summaries of evaluation scores and the files of an :class:`~srpo.evaluation.artifacts.EvalResults`.

Reported per model, metric and category, and ``overall``:

- ``mean``: the mean over the category's prompts; ``overall`` is the macro average over the
  benchmark's categories (the mean of category means; for HPDv2's four equal categories this is
  the plain mean over all 3,200 prompts). Style-variant categories (``style/<word>``) are
  reported on their own and never enter ``overall``.
- ``ci_low`` / ``ci_high``: percentile bootstrap interval over prompts (resampled within
  categories for ``overall``), ``confidence`` (default 95 %), ``bootstrap_samples`` resamples.
- deltas ``model - baseline``: the same on per-prompt differences (a paired bootstrap: both
  models saw the same prompts and the same initial noise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from srpo.evaluation.artifacts import INDEX_HTML, EvalResults
from srpo.evaluation.bootstrap import bootstrap_ci
from srpo.evaluation.config import STYLE_CATEGORY_PREFIX, EvalReportConfig
from srpo.evaluation.html import esc, page, table
from srpo.io import atomic_write_text, csv_text

OVERALL = "overall"
RESULTS_FORMAT = "srpo-eval-results/1"


def is_style(category: str) -> bool:
    return category.startswith(STYLE_CATEGORY_PREFIX)


def summarise(items: list[dict], scores: dict[str, dict[str, list[float]]], cfg: EvalReportConfig
              ) -> tuple[list[dict], list[dict]]:
    """``(summary_rows, delta_rows)`` for ``scores[model][metric] = [N]`` over ``items``."""
    categories = [it["category"] for it in items]
    bench_cats = [c for c in dict.fromkeys(categories) if not is_style(c)]
    style_cats = [c for c in dict.fromkeys(categories) if is_style(c)]
    groups: list[tuple[str, np.ndarray, list[str] | None]] = []
    cats = np.asarray(categories)
    if bench_cats:
        mask = np.isin(cats, bench_cats)
        groups.append((OVERALL, np.flatnonzero(mask), cats[mask].tolist()))
    for c in bench_cats + style_cats:
        groups.append((c, np.flatnonzero(cats == c), None))

    def stats(values: np.ndarray, idx: np.ndarray, strata: list[str] | None, salt: int) -> dict[str, Any]:
        est, lo, hi = bootstrap_ci(values[idx], groups=strata, samples=cfg.bootstrap_samples,
                                   confidence=cfg.confidence, seed=cfg.bootstrap_seed + salt)
        return {"n": int(len(idx)), "mean": est, "ci_low": lo, "ci_high": hi}

    summary, deltas = [], []
    models = list(scores)
    for model in models:
        for metric, vals in scores[model].items():
            arr = np.asarray(vals, dtype=float)
            for gi, (name, idx, strata) in enumerate(groups):
                summary.append({"model": model, "metric": metric, "category": name, **stats(arr, idx, strata, gi)})
    if cfg.baseline in scores:
        base = scores[cfg.baseline]
        for model in models:
            if model == cfg.baseline:
                continue
            for metric, vals in scores[model].items():
                if metric not in base:
                    continue
                diff = np.asarray(vals, dtype=float) - np.asarray(base[metric], dtype=float)
                for gi, (name, idx, strata) in enumerate(groups):
                    row = stats(diff, idx, strata, gi)
                    deltas.append({"model": model, "baseline": cfg.baseline, "metric": metric, "category": name,
                                   "n": row["n"], "delta": row["mean"], "ci_low": row["ci_low"],
                                   "ci_high": row["ci_high"]})
    return summary, deltas


def refuse_non_finite(scores: dict[str, dict[str, list[float]]], items: list[dict]) -> None:
    """Raise if any score is NaN or infinite: one would turn its category's mean, the overall mean,
    the delta and both confidence bounds into NaN without a word."""
    for model, by_metric in scores.items():
        for metric, values in by_metric.items():
            bad = [items[i]["index"] for i, v in enumerate(values) if not np.isfinite(v)]
            if bad:
                raise ValueError(f"metric {metric!r} gave {len(bad)} non-finite score(s) for model {model!r} "
                                 f"(benchmark items {bad[:5]}{' ...' if len(bad) > 5 else ''}): check the metric's "
                                 "output (for an external metric, its results file) and run the evaluation again")


def overall_means(summary: list[dict]) -> dict[str, dict[str, float]]:
    """``{model: {metric: mean}}`` for the overall row (the single category when there is no overall)."""
    out: dict[str, dict[str, float]] = {}
    have_overall = any(r["category"] == OVERALL for r in summary)
    for r in summary:
        if (r["category"] == OVERALL) if have_overall else True:
            out.setdefault(r["model"], {}).setdefault(r["metric"], r["mean"])
    return out


SUMMARY_COLUMNS = ["model", "metric", "category", "n", "mean", "ci_low", "ci_high"]
DELTA_COLUMNS = ["model", "baseline", "metric", "category", "n", "delta", "ci_low", "ci_high"]


def write_results(folder: Path, items: list[dict], scores: dict[str, dict[str, list[float]]],
                  cfg: EvalReportConfig, meta: dict[str, Any]) -> EvalResults:
    """Write results.json, the three CSVs and index.html into ``folder`` (images already there)."""
    refuse_non_finite(scores, items)
    summary, deltas = summarise(items, scores, cfg)
    models = list(scores)
    metrics = list(dict.fromkeys(m for s in scores.values() for m in s))
    data = {"format": RESULTS_FORMAT, "items": items, "models": models, "metrics": metrics,
            "categories": list(dict.fromkeys(it["category"] for it in items)), "scores": scores,
            "summary": summary, "deltas": deltas, "meta": meta}
    atomic_write_text(folder / "results.json", json.dumps(data, indent=1, ensure_ascii=False))
    atomic_write_text(folder / "summary.csv", csv_text(summary, SUMMARY_COLUMNS))
    atomic_write_text(folder / "deltas.csv", csv_text(deltas, DELTA_COLUMNS))
    results, per_image = EvalResults(folder), []
    for model in models:
        for i, it in enumerate(items):
            image = results.image_path(model, it["index"]).relative_to(folder).as_posix()
            row = {"index": it["index"], "category": it["category"], "seed": it["seed"], "model": model,
                   "image": image, "prompt": it["prompt"]}
            row.update({m: scores[model][m][i] for m in metrics if m in scores[model]})
            per_image.append(row)
    atomic_write_text(folder / "scores.csv",
                      csv_text(per_image, ["index", "category", "seed", "model", "image", *metrics, "prompt"]))
    atomic_write_text(folder / INDEX_HTML, render_html(results, data, cfg))
    return results


def render_html(results: EvalResults, data: dict, cfg: EvalReportConfig) -> str:
    """Score tables (mean [low, high] per model) and an image grid; all text escaped, thumbnails inlined."""
    from srpo.evaluation.images import data_uri

    models, metrics = data["models"], data["metrics"]
    parts = [f"<p>{len(data['items'])} prompts; models: {esc(', '.join(models))}; cells are mean "
             f"[{esc(round(cfg.confidence * 100))} % bootstrap interval over prompts, "
             f"{esc(cfg.bootstrap_samples)} resamples]. <i>overall</i> is the mean of the category means.</p>"]
    cell = {(r["model"], r["metric"], r["category"]): r for r in data["summary"]}
    cats = list(dict.fromkeys(r["category"] for r in data["summary"]))
    rows = []
    for metric in metrics:
        for cat in cats:
            first = next((cell[(m, metric, cat)] for m in models if (m, metric, cat) in cell), None)
            if first is None:
                continue
            rows.append([metric, cat, first["n"], *(
                f"{cell[(m, metric, cat)]['mean']:.4f} [{cell[(m, metric, cat)]['ci_low']:.4f}, "
                f"{cell[(m, metric, cat)]['ci_high']:.4f}]" if (m, metric, cat) in cell else "-" for m in models)])
    parts.append("<h2>Scores</h2>" + table(["metric", "category", "n", *models], rows))
    if data["deltas"]:
        rows = [[r["model"], r["baseline"], r["metric"], r["category"], r["n"], r["delta"], r["ci_low"], r["ci_high"]]
                for r in data["deltas"]]
        parts.append("<h2>Differences to the baseline (paired over prompts)</h2>" + table(DELTA_COLUMNS, rows))
    shown = data["items"][: cfg.grid_prompts]
    if shown:
        size = cfg.thumbnail_size
        cells = ['<div class="prompt"><b>prompt</b></div>'] + [f"<div><b>{esc(m)}</b></div>" for m in models]
        for pos, it in enumerate(shown):
            cells.append(f'<div class="prompt"><b>#{esc(it["index"])}</b> [{esc(it["category"])}] '
                         f'seed {esc(it["seed"])}<br>{esc(it["prompt"])}</div>')
            for model in models:
                scores = "; ".join(f"{m} {data['scores'][model][m][pos]:.3f}" for m in metrics
                                   if m in data["scores"][model])
                uri = data_uri(results.image_path(model, it["index"]), size)
                cells.append(f'<div class="cell"><img src="{esc(uri)}" alt="{esc(model)}">{esc(scores)}</div>')
        parts.append(f"<h2>Images (first {len(shown)} prompts)</h2>"
                     f'<div class="grid" style="grid-template-columns:minmax(12em,22em) '
                     f'repeat({len(models)},{size}px)">' + "".join(cells) + "</div>")
    return page("Evaluation results", "".join(parts))
