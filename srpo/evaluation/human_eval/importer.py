"""Import raters' annotation files: check them, un-blind them with the key, and summarise.

The key is given (``key``: a JSON file, or in the ZenML step also an artifact version id) or,
when not, found by :func:`find_key`: the newest stored key whose ``export_id`` is the one the
files carry (files of several exports are refused), so a later export never replaces the key of
an earlier study.

Checks (each failure names the file and says what to do):

- a file must be an export of this page format (JSON or CSV) from the same export as the key;
- page, task and image ids must be known to the key, and every image must belong to its task
  (an unknown id means a file from another export, or an edited file);
- a quality rating needs all four dimensions with a known level, and an ``overall`` in the file
  must equal the rubric's rule;
- one person rates an image (or chooses in a task) at most once: the same annotator (by name,
  else by rater slot) twice for one image, or two files of the same page, is a "duplicate
  rater" error;
- unless ``allow_incomplete``, every task of an imported page must be finished.

Summaries (``report.json`` and CSVs):

- quality: share of Excellent per model for each dimension and the derived overall (the
  paper's headline numbers), also per category, and the distribution of levels; percentile
  bootstrap intervals resampling prompts (all ratings of a prompt stay together);
  Krippendorff's alpha (ordinal, Excellent > Good > Pass > Failed) per dimension, over images;
- hacking: how often each model's image was marked worst (hacking rate), with intervals, and
  nominal alpha over prompts;
- style: each model's win rate per style word and overall, with intervals, and nominal alpha.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpo.evaluation.agreement import krippendorff_alpha
from srpo.evaluation.artifacts import INDEX_HTML, HumanEvalReport
from srpo.evaluation.bootstrap import bootstrap_ci
from srpo.evaluation.config import HumanEvalImportConfig
from srpo.evaluation.html import page, table
from srpo.evaluation.human_eval.export import KEY_FORMAT
from srpo.evaluation.human_eval.page import ANNOTATION_FORMAT
from srpo.evaluation.human_eval.rubric import DIMENSION_KEYS, LEVELS, OVERALL, overall_rating
from srpo.io import atomic_write_text, csv_text, resolve_local


class AnnotationError(ValueError):
    """An annotation file (or the set of files) cannot be used as it is."""


@dataclass
class Annotation:
    """One parsed file."""

    source: str
    export_id: str
    page_id: str
    study: str
    rater: str
    annotator: str
    records: list[dict] = field(default_factory=list)

    @property
    def person(self) -> str:
        return self.annotator or self.rater


# ------------------------------------------------------------------------------------ reading

def annotation_files(locations: Iterable[str]) -> list[tuple[str, Path]]:
    """``(name, local path)`` of every ``.json``/``.csv`` file given directly or inside a folder."""
    out = []
    for loc in locations:
        path = resolve_local(loc)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".json", ".csv") and p.is_file())
            if not found:
                raise AnnotationError(f"annotation folder {loc!r} holds no .json or .csv files")
            out += [(f"{loc.rstrip('/')}/{p.relative_to(path).as_posix()}", p) for p in found]
        else:
            out.append((loc, path))
    return out


def parse_annotation(name: str, path: Path) -> Annotation:
    """Read one exported file (JSON or CSV)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{name}: not UTF-8 text ({err.reason}); give the file the page exported") from err
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{name}: not valid JSON ({err.msg}, line {err.lineno}); give the file the "
                                  "page's Export JSON button wrote") from err
        if not isinstance(data, dict) or data.get("format") != ANNOTATION_FORMAT:
            raise AnnotationError(f"{name}: not an annotation export (expected format {ANNOTATION_FORMAT!r}); "
                                  "give the file the page's Export JSON button wrote")
        for k in ("export_id", "page_id", "study", "rater", "records"):
            if k not in data:
                raise AnnotationError(f"{name}: field {k!r} is missing; the file was edited or truncated")
        if not isinstance(data["records"], list) or not all(isinstance(r, dict) for r in data["records"]):
            raise AnnotationError(f"{name}: 'records' must be a list of objects")
        return Annotation(name, str(data["export_id"]), str(data["page_id"]), str(data["study"]), str(data["rater"]),
                          str(data.get("annotator") or "").strip(), data["records"])
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        need = {"export_id", "page_id", "study", "rater", "annotator", "task"}
        if not rows:
            raise AnnotationError(f"{name}: the CSV has no rows: export again after rating")
        missing = sorted(need - set(rows[0]))
        if missing:
            raise AnnotationError(f"{name}: CSV columns {missing} are missing; give the file the page's Export CSV "
                                  "button wrote")
        heads = {(r["export_id"], r["page_id"], r["study"], r["rater"], r["annotator"]) for r in rows}
        if len(heads) != 1:
            raise AnnotationError(f"{name}: rows come from {len(heads)} different pages or annotators; keep one "
                                  "export per file")
        export_id, page_id, study, rater, annotator = heads.pop()
        records = []
        for r in rows:
            rec = {k: v for k, v in r.items() if k in ("task", "image", "choice", OVERALL, *DIMENSION_KEYS) and v}
            records.append(rec)
        return Annotation(name, export_id, page_id, study, rater, annotator.strip(), records)
    raise AnnotationError(f"{name}: unknown file type {path.suffix!r}; give .json or .csv exports of the page")


def read_annotations(locations: Iterable[str]) -> list[Annotation]:
    """Every annotation file given directly or inside a folder, parsed."""
    return [parse_annotation(name, path) for name, path in annotation_files(locations)]


def export_id_of(annotations: list[Annotation]) -> str:
    """The one export the files come from; files of several exports are refused."""
    first_file: dict[str, str] = {}
    for ann in annotations:
        first_file.setdefault(ann.export_id, ann.source)
    if not first_file:
        raise AnnotationError("no annotation files were given: list the raters' exported .json/.csv files or folders")
    if len(first_file) > 1:
        listing = "; ".join(f"{export_id!r} (e.g. {source})" for export_id, source in sorted(first_file.items()))
        raise AnnotationError(f"the annotation files come from {len(first_file)} different exports: {listing}; "
                              "import each export's files separately, with its own key")
    return next(iter(first_file))


# How to name the key explicitly; every "which key?" error ends with this.
KEY_OPTIONS = ("set `key` in the import config (parameters.annotations.key) to the key's ZenML artifact version "
               "id (`zenml artifact version list --artifact=human_eval_key` lists them; `zenml artifact version "
               "describe <id>` shows a key's export_id in its run metadata, older keys have it in the metadata of "
               "their export_human_eval step) or to a JSON file holding the key")


@dataclass
class KeyCandidate:
    """A stored key: a name for messages, its export id when known without loading it, and its loader."""

    label: str
    export_id: str | None
    load: Callable[[], Any]


def find_key(export_id: str, candidates: Iterable[KeyCandidate]) -> dict:
    """The key of export ``export_id``: the first candidate (give them newest first) whose key is for it.

    A candidate whose recorded export id differs is skipped without loading it; one without a
    recorded id is loaded and its ``export_id`` compared.
    """
    searched = 0
    for candidate in candidates:
        searched += 1
        if candidate.export_id is not None and candidate.export_id != export_id:
            continue
        key = candidate.load()
        if isinstance(key, dict) and key.get("export_id") == export_id:
            check_key(key, candidate.label)
            return key
    if not searched:
        raise AnnotationError(f"no human_eval_key artifact exists in this ZenML store, so the key of export "
                              f"{export_id!r} (the annotation files' export) cannot be found: run export_human_eval "
                              f"in this store first, or {KEY_OPTIONS}")
    raise AnnotationError(f"none of the {searched} human_eval_key artifact versions in this ZenML store is the key "
                          f"of export {export_id!r}, the export the annotation files come from (was it exported "
                          f"with another ZenML store, or was its key deleted?): {KEY_OPTIONS}")


def read_key(location: str) -> dict:
    path = resolve_local(location)
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"key {location!r} is not valid JSON: give the human_eval_key the export wrote") from err
    check_key(key, location)
    return key


def check_key(key: Any, where: str = "key") -> None:
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise AnnotationError(f"{where} is not a human-evaluation key (format {KEY_FORMAT!r})")


# ----------------------------------------------------------------------------------- checking

@dataclass
class Checked:
    """Validated, un-blinded ratings."""

    quality: list[dict] = field(default_factory=list)   # person, task, image, model, item, category, dims..., overall
    choices: dict[str, list[dict]] = field(default_factory=dict)  # study -> person, task, item, category, model
    files: list[dict] = field(default_factory=list)


def _task_image(study: dict, image, task: str, where: str, mismatch: str) -> dict:
    """The key's record of image id ``image`` in ``study``, which must belong to ``task`` (else: ``mismatch``)."""
    info = study["images"].get(image)
    if info is None:
        raise AnnotationError(f"{where}: unknown image id {image!r}; the file does not belong to this export")
    if info["task"] != task:
        raise AnnotationError(f"{where}: image {image} {mismatch}")
    return info


def check_and_unblind(annotations: list[Annotation], key: dict, allow_incomplete: bool = False) -> Checked:
    """Apply every check of the module docstring and attach model names; raises :class:`AnnotationError`."""
    out = Checked()
    seen_pages: dict[str, str] = {}
    seen_units: dict[tuple[str, str, str], str] = {}
    for ann in annotations:
        if ann.export_id != key["export_id"]:
            raise AnnotationError(f"{ann.source}: comes from export {ann.export_id!r}, but the key is for export "
                                  f"{key['export_id']!r}; use the key of export {ann.export_id!r}: leave `key` "
                                  "unset to find it among the human_eval_key artifacts by its export id, or "
                                  f"{KEY_OPTIONS}")
        page_info = key["pages"].get(ann.page_id)
        if page_info is None:
            raise AnnotationError(f"{ann.source}: unknown page id {ann.page_id!r}; the file does not belong to this "
                                  "export")
        if page_info["study"] != ann.study or page_info["rater"] != ann.rater:
            raise AnnotationError(f"{ann.source}: says study {ann.study!r} / rater {ann.rater!r}, but page "
                                  f"{ann.page_id} is {page_info['study']!r} / {page_info['rater']!r}; the file was edited")
        if ann.page_id in seen_pages:
            raise AnnotationError(f"duplicate rater: {ann.source} and {seen_pages[ann.page_id]} are both exports of "
                                  f"page {ann.page_id} ({ann.study}, {ann.rater}); keep only the final export")
        seen_pages[ann.page_id] = ann.source
        study = key["studies"][ann.study]
        page_tasks = set(page_info["tasks"])
        finished: set[str] = set()
        per_task_images: dict[str, set[str]] = {}
        for n, rec in enumerate(ann.records, 1):
            where = f"{ann.source}, record {n}"
            task = rec.get("task")
            if task not in study["tasks"]:
                raise AnnotationError(f"{where}: unknown task id {task!r}; the file does not belong to this export")
            if task not in page_tasks:
                raise AnnotationError(f"{where}: task {task} is not on page {ann.page_id}; the file was edited")
            item = study["tasks"][task]
            if ann.study == "quality":
                image = rec.get("image")
                info = _task_image(study, image, task, where, f"belongs to another prompt than task {task}")
                missing = [d for d in DIMENSION_KEYS if not rec.get(d)]
                if missing:
                    if allow_incomplete:
                        continue
                    raise AnnotationError(f"{where}: missing dimension(s) {missing} for image {image}; finish rating "
                                          "it on the page and export again (or set allow_incomplete: true)")
                bad = {d: rec[d] for d in DIMENSION_KEYS if rec[d] not in LEVELS}
                if bad:
                    raise AnnotationError(f"{where}: unknown rating(s) {bad}; use {', '.join(LEVELS)}")
                derived = overall_rating(rec)
                if rec.get(OVERALL) and rec[OVERALL] != derived:
                    raise AnnotationError(f"{where}: overall {rec[OVERALL]!r} disagrees with the rubric's rule "
                                          f"({derived!r} for these four ratings); the file was edited")
                unit = (ann.study, ann.person, image)
                if unit in seen_units:
                    raise AnnotationError(f"duplicate rater: {ann.person!r} rated image {image} in {seen_units[unit]} "
                                          f"and again in {where}; each person rates an image once")
                seen_units[unit] = where
                per_task_images.setdefault(task, set()).add(image)
                out.quality.append({"person": ann.person, "task": task, "image": image, "model": info["model"],
                                    "item": item["item"], "category": item["category"],
                                    **{d: rec[d] for d in DIMENSION_KEYS}, OVERALL: derived})
            else:
                choice = rec.get("choice")
                info = _task_image(study, choice, task, where, f"is not one of task {task}'s images")
                unit = (ann.study, ann.person, task)
                if unit in seen_units:
                    raise AnnotationError(f"duplicate rater: {ann.person!r} answered task {task} in {seen_units[unit]} "
                                          f"and again in {where}; each person answers a prompt once")
                seen_units[unit] = where
                finished.add(task)
                out.choices.setdefault(ann.study, []).append(
                    {"person": ann.person, "task": task, "model": info["model"], "item": item["item"],
                     "category": item["category"]})
        if ann.study == "quality":
            for task, imgs in per_task_images.items():
                if len(imgs) == len(study["models"]):
                    finished.add(task)
        unfinished = page_tasks - finished
        if unfinished and not allow_incomplete:
            raise AnnotationError(f"{ann.source}: {len(unfinished)} of {len(page_tasks)} prompts on page "
                                  f"{ann.study}/{ann.rater} are not finished; finish them and export again, or set "
                                  "allow_incomplete: true")
        out.files.append({"file": ann.source, "study": ann.study, "rater": ann.rater, "annotator": ann.person,
                          "prompts_done": len(finished & page_tasks), "prompts_total": len(page_tasks)})
    return out


# -------------------------------------------------------------------------------- summarising

def _share_ci(rows: list[dict], hit, cfg: HumanEvalImportConfig, seed_salt: int) -> tuple[float, float, float, int]:
    """Share of ``hit(row)`` with a prompt-cluster bootstrap interval; ``(share, low, high, n)``."""
    if not rows:
        return float("nan"), float("nan"), float("nan"), 0
    by_item: dict[int, list[int]] = {}
    for r in rows:
        by_item.setdefault(r["item"], []).append(1 if hit(r) else 0)
    arr = np.array([[sum(v), len(v)] for v in by_item.values()], dtype=float)  # [prompts, 2]
    est, lo, hi = bootstrap_ci(arr, samples=cfg.bootstrap_samples, confidence=cfg.confidence,
                               seed=cfg.bootstrap_seed + seed_salt, statistic=lambda a: a[:, 0].sum() / a[:, 1].sum())
    return est, lo, hi, len(rows)


def summarise(checked: Checked, key: dict, cfg: HumanEvalImportConfig) -> dict:
    """All tables of the report as lists of rows (see the module docstring)."""
    excellent, levels, agreement, hacking, style = [], [], [], [], []
    if checked.quality:
        models = key["studies"]["quality"]["models"]
        cats = sorted({r["category"] for r in checked.quality})
        for mi, model in enumerate(models):
            rows = [r for r in checked.quality if r["model"] == model]
            for di, dim in enumerate((*DIMENSION_KEYS, OVERALL)):
                for cat in ["all", *cats] if len(cats) > 1 else ["all"]:
                    sub = rows if cat == "all" else [r for r in rows if r["category"] == cat]
                    est, lo, hi, n = _share_ci(sub, lambda r, d=dim: r[d] == "Excellent", cfg, 100 * mi + di)
                    excellent.append({"model": model, "dimension": dim, "category": cat, "ratings": n,
                                      "excellent_share": est, "ci_low": lo, "ci_high": hi})
                counts = {lv: sum(r[dim] == lv for r in rows) for lv in LEVELS}
                levels.append({"model": model, "dimension": dim, **counts})
        for dim in (*DIMENSION_KEYS, OVERALL):
            units: dict[str, list[int]] = {}
            for r in checked.quality:
                units.setdefault(r["image"], []).append(LEVELS.index(r[dim]))
            agreement.append({"study": "quality", "dimension": dim, "level": "ordinal",
                              "units": sum(len(v) >= 2 for v in units.values()),
                              "alpha": krippendorff_alpha(list(units.values()), "ordinal")})
    for study, rows in checked.choices.items():
        models = key["studies"][study]["models"]
        groups = ["all"] + (sorted({r["category"] for r in rows}) if study == "style" else [])
        for mi, model in enumerate(models):
            for cat in groups:
                sub = rows if cat == "all" else [r for r in rows if r["category"] == cat]
                est, lo, hi, n = _share_ci(sub, lambda r, m=model: r["model"] == m, cfg, 1000 + 10 * mi)
                row = {"model": model, "category": cat, "votes": n, "ci_low": lo, "ci_high": hi}
                if study == "hacking":
                    hacking.append({**row, "hacking_rate": est})
                else:
                    style.append({**row, "win_rate": est})
        units: dict[str, list[str]] = {}
        for r in rows:
            units.setdefault(r["task"], []).append(r["model"])
        agreement.append({"study": study, "dimension": "choice", "level": "nominal",
                          "units": sum(len(v) >= 2 for v in units.values()),
                          "alpha": krippendorff_alpha(list(units.values()), "nominal")})
    return {"excellent_share": excellent, "levels": levels, "agreement": agreement, "hacking": hacking,
            "style": style, "files": checked.files}


def import_human_eval(cfg: HumanEvalImportConfig, key: dict, out_dir: Path,
                      annotations: list[Annotation] | None = None) -> HumanEvalReport:
    """Read, check, un-blind and summarise; writes the report into ``out_dir`` (only when all checks pass).

    ``annotations``: the files already read with :func:`read_annotations` (else ``cfg.annotations`` is read).
    """
    check_key(key)
    if annotations is None:
        annotations = read_annotations(cfg.annotations)
    checked = check_and_unblind(annotations, key, cfg.allow_incomplete)
    if not checked.quality and not checked.choices:
        raise AnnotationError("the annotation files hold no ratings: rate on the pages, export, and import those files")
    summary = summarise(checked, key, cfg)
    report = {"format": "srpo-human-eval-report/1", "export_id": key["export_id"],
              "confidence": cfg.confidence, "bootstrap_samples": cfg.bootstrap_samples, **summary,
              "ratings": checked.quality, "choices": checked.choices}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1, ensure_ascii=False))
    for name in ("excellent_share", "levels", "agreement", "hacking", "style", "files"):
        if summary[name]:
            atomic_write_text(out_dir / f"{name}.csv", csv_text(summary[name]))
    atomic_write_text(out_dir / INDEX_HTML, render_report(summary, cfg))
    return HumanEvalReport(out_dir)


def headline(summary: dict) -> dict[str, dict[str, float]]:
    """``{model: {dimension: share of Excellent}}`` over all categories."""
    out: dict[str, dict[str, float]] = {}
    for r in summary["excellent_share"]:
        if r["category"] == "all":
            out.setdefault(r["model"], {})[r["dimension"]] = r["excellent_share"]
    return out


def render_report(summary: dict, cfg: HumanEvalImportConfig) -> str:
    pct = int(round(cfg.confidence * 100))
    parts = [f"<p>{pct} % intervals: percentile bootstrap over prompts ({cfg.bootstrap_samples} resamples).</p>"]
    if summary["excellent_share"]:
        rows = [[r["model"], r["dimension"], r["category"], r["ratings"], 100 * r["excellent_share"],
                 100 * r["ci_low"], 100 * r["ci_high"]] for r in summary["excellent_share"]]
        parts.append("<h2>Share of Excellent (%)</h2>"
                     + table(["model", "dimension", "category", "ratings", "excellent %", "low", "high"], rows, 1))
        rows = [[r["model"], r["dimension"], *(r[lv] for lv in LEVELS)] for r in summary["levels"]]
        parts.append("<h2>Ratings per level</h2>" + table(["model", "dimension", *LEVELS], rows))
    if summary["hacking"]:
        rows = [[r["model"], r["votes"], 100 * r["hacking_rate"], 100 * r["ci_low"], 100 * r["ci_high"]]
                for r in summary["hacking"]]
        parts.append("<h2>Hacking rate: marked worst of three (%)</h2>"
                     + table(["model", "votes", "hacking %", "low", "high"], rows, 1))
    if summary["style"]:
        rows = [[r["model"], r["category"], r["votes"], 100 * r["win_rate"], 100 * r["ci_low"], 100 * r["ci_high"]]
                for r in summary["style"]]
        parts.append("<h2>Style study: preferred (%)</h2>"
                     + table(["model", "style", "votes", "win %", "low", "high"], rows, 1))
    if summary["agreement"]:
        rows = [[r["study"], r["dimension"], r["level"], r["units"], r["alpha"]] for r in summary["agreement"]]
        parts.append("<h2>Inter-rater agreement (Krippendorff's alpha)</h2>"
                     + table(["study", "dimension", "level", "units with 2+ ratings", "alpha"], rows, 3))
    rows = [[f["file"], f["study"], f["rater"], f["annotator"], f["prompts_done"], f["prompts_total"]]
            for f in summary["files"]]
    parts.append("<h2>Files</h2>" + table(["file", "study", "rater", "annotator", "done", "prompts"], rows))
    return page("Human evaluation results", "".join(parts))


__all__ = ["AnnotationError", "KeyCandidate", "check_and_unblind", "export_id_of", "find_key", "headline",
           "import_human_eval", "parse_annotation", "read_annotations", "read_key"]
