"""Export a blinded human evaluation: stratified sample, rater assignment, pages and a separate key.

From an :class:`~srpo.evaluation.artifacts.EvalResults` (the images every model made for every
prompt) this writes, for each configured study:

- a sample of prompts: ``quality``: ``prompts_per_category`` per category (the paper: 125 of
  each of HPDv2's four, 500 in all); ``hacking``: ``num_prompts`` drawn across categories
  (paper: 200); ``style``: up to ``num_prompts`` per ``style/<word>`` category;
- an assignment of each prompt to ``raters_per_prompt`` of ``num_raters`` rater slots
  (load-balanced; with ``num_raters == raters_per_prompt`` every rater sees every prompt, the
  paper's fully crossed design);
- one self-contained page per study and rater slot (``pages/<study>_<rater>.html``) in which
  models appear only as random image ids, images are in a random order per prompt and rater,
  and prompts in a random order per rater;
- the key (returned separately, never written next to the pages): which model and prompt
  every image id and task id stands for.

With ``output_dir`` set, the pages are published to ``<output_dir>/<export_id>/`` (so pages of
different exports never mix), ``manifest.json`` last (a folder without it is an unfinished copy),
and only after the caller's ``store_key`` has stored the key: wherever pages exist, their key
has been kept.

The sample and assignment depend on ``seed`` only; ids and orders come from the operating
system's randomness unless ``blinding_seed`` is given, so nobody can re-derive the key from
the configuration.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from srpo.evaluation.artifacts import INDEX_HTML, EvalResults, HumanEvalPages
from srpo.evaluation.config import STYLE_CATEGORY_PREFIX, HumanEvalConfig
from srpo.evaluation.html import esc, page, table
from srpo.evaluation.human_eval.page import ANNOTATION_FORMAT, PAGE_FORMAT, render_page
from srpo.evaluation.human_eval.rubric import DIMENSIONS, LEVELS
from srpo.evaluation.images import data_uri
from srpo.io import atomic_directory, atomic_write_text

KEY_FORMAT = "srpo-human-eval-key/1"
CHOICE_LABELS = {"hacking": "Worst of the three", "style": "Follows the style better"}


def stratified_sample(indices_by_category: dict[str, list[int]], per_category: int, rng: random.Random) -> list[int]:
    """``per_category`` indices from each category (all of a smaller one), sorted."""
    out: list[int] = []
    for cat in sorted(indices_by_category):
        pool = indices_by_category[cat]
        out += rng.sample(pool, min(per_category, len(pool)))
    return sorted(out)


def assign_raters(num_items: int, raters_per_item: int, num_raters: int, rng: random.Random) -> list[list[int]]:
    """For each item, ``raters_per_item`` distinct slots of ``num_raters``, keeping loads balanced."""
    load = [0] * num_raters
    out = []
    for _ in range(num_items):
        order = sorted(range(num_raters), key=lambda r: (load[r], rng.random()))
        chosen = sorted(order[:raters_per_item])
        for r in chosen:
            load[r] += 1
        out.append(chosen)
    return out


class _Ids:
    """Unique opaque ids (``<prefix>-<10 hex>``) from the blinding randomness."""

    def __init__(self, rng: random.Random | secrets.SystemRandom) -> None:
        self.rng, self.seen = rng, set()

    def new(self, prefix: str) -> str:
        while True:
            token = f"{prefix}-{self.rng.getrandbits(40):010x}"
            if token not in self.seen:
                self.seen.add(token)
                return token


def _study_models(name: str, wanted: list[str] | None, available: list[str]) -> list[str]:
    models = list(wanted) if wanted else list(available)
    unknown = [m for m in models if m not in available]
    if unknown:
        raise ValueError(f"human_eval.{name}.models {unknown} were not evaluated; the evaluation has models "
                         f"{available}: fix the names or evaluate those models")
    if not models:
        raise ValueError(f"the {name} study has no models to show")
    return models


def export_human_eval(results: EvalResults, cfg: HumanEvalConfig, out_dir: Path,
                      store_key: Callable[[dict], Any] | None = None) -> tuple[HumanEvalPages, dict]:
    """Write the pages into ``out_dir``; returns ``(HumanEvalPages, key)``. Nothing is half-written on error.

    ``store_key(key)`` is called once the pages are written and before they are published to
    ``cfg.output_dir`` (required then): if it raises, nothing is published.
    """
    if cfg.output_dir and store_key is None:
        raise ValueError("human_eval.output_dir is set, but no store_key was given: the key must be stored before "
                         "pages are published (blinding cannot be re-derived); pass store_key, as the "
                         "export_human_eval step does")
    data = results.read_json()
    items, available = data["items"], data["models"]
    sample_rng = random.Random(cfg.seed)
    blind_rng: random.Random | secrets.SystemRandom = (
        random.Random(f"blind-{cfg.blinding_seed}") if cfg.blinding_seed is not None else secrets.SystemRandom())
    ids = _Ids(blind_rng)
    export_id = ids.new("export")
    by_cat: dict[str, list[int]] = {}
    for pos, it in enumerate(items):
        by_cat.setdefault(it["category"], []).append(pos)
    bench_cats = [c for c in by_cat if not c.startswith(STYLE_CATEGORY_PREFIX)]
    style_cats = [c for c in by_cat if c.startswith(STYLE_CATEGORY_PREFIX)]

    studies: list[tuple[str, list[str], list[int], int, int]] = []  # name, models, item positions, per, slots
    if cfg.quality is not None:
        q = cfg.quality
        models = _study_models("quality", q.models, available)
        cats = q.categories or bench_cats
        _check_categories("quality", cats, by_cat)
        sample = stratified_sample({c: by_cat[c] for c in cats}, q.prompts_per_category, sample_rng)
        studies.append(("quality", models, sample, q.raters_per_prompt, q.num_raters))
    if cfg.hacking is not None:
        h = cfg.hacking
        models = _study_models("hacking", h.models, available)
        cats = h.categories or bench_cats
        _check_categories("hacking", cats, by_cat)
        pool = sorted(p for c in cats for p in by_cat[c])
        sample = sorted(sample_rng.sample(pool, min(h.num_prompts, len(pool))))
        studies.append(("hacking", models, sample, h.raters_per_prompt, h.num_raters))
    if cfg.style is not None:
        s = cfg.style
        models = _study_models("style", s.models, available)
        if not style_cats:
            raise ValueError("human_eval.style needs style-variant prompts (categories style/<word>): set "
                             "benchmark.style_variants with the style words, or remove human_eval.style")
        sample = sorted(p for c in style_cats for p in by_cat[c][: s.num_prompts])
        studies.append(("style", models, sample, s.raters_per_prompt, s.num_raters))
    if not studies:
        raise ValueError("human_eval has no study configured: set quality, hacking or style (or enabled: false)")

    key: dict[str, Any] = {"format": KEY_FORMAT, "export_id": export_id,
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "levels": list(LEVELS), "dimensions": [k for k, _ in DIMENSIONS],
                           "studies": {}, "pages": {}}
    uri_cache: dict[Path, str] = {}

    def uri(path: Path) -> str:
        if path not in uri_cache:
            if not path.is_file():
                raise FileNotFoundError(f"image {path} of the evaluation results is missing: re-run the evaluation")
            uri_cache[path] = data_uri(path, cfg.image_max_side, "JPEG", cfg.jpeg_quality)
        return uri_cache[path]

    out_dir = Path(out_dir)
    manifest_pages = []
    source_of = {it["index"]: it.get("source") for it in items}  # edit evaluations: each item's source image
    with atomic_directory(out_dir) as tmp:  # the pages appear complete, or not at all
        (tmp / "pages").mkdir()
        for study, models, sample, per, slots in studies:
            tasks, images = {}, {}
            task_images: dict[str, list[str]] = {}
            for pos in sample:
                it = items[pos]
                tid = ids.new("task")
                tasks[tid] = {"item": it["index"], "category": it["category"], "prompt": it["prompt"]}
                task_images[tid] = []
                for model in models:
                    iid = ids.new("img")
                    images[iid] = {"model": model, "task": tid, "item": it["index"]}
                    task_images[tid].append(iid)
            assignment = assign_raters(len(sample), per, slots, sample_rng)
            key["studies"][study] = {"models": models, "tasks": tasks, "images": images,
                                     "raters_per_prompt": per, "num_raters": slots}
            task_ids = list(tasks)
            for slot in range(slots):
                rater = f"rater-{slot + 1:02d}"
                mine = [tid for tid, chosen in zip(task_ids, assignment) if slot in chosen]
                if not mine:
                    continue
                blind_rng.shuffle(mine)
                page_id = ids.new("page")
                page_tasks = []
                for tid in mine:
                    order = list(task_images[tid])
                    blind_rng.shuffle(order)
                    task = {"id": tid, "prompt": tasks[tid]["prompt"],
                            "images": [{"id": iid, "src": uri(results.image_path(images[iid]["model"],
                                                                                 images[iid]["item"]))}
                                       for iid in order]}
                    if source_of.get(tasks[tid]["item"]):  # an edit: the source, shown unrated before the edits
                        task["source"] = uri(results.path / source_of[tasks[tid]["item"]])
                    page_tasks.append(task)
                page_data = {"format": PAGE_FORMAT, "annotation_format": ANNOTATION_FORMAT, "export_id": export_id,
                             "page_id": page_id, "study": study, "rater": rater, "title": cfg.title,
                             "levels": list(LEVELS), "dimensions": [{"key": k, "label": v} for k, v in DIMENSIONS],
                             "choice_label": CHOICE_LABELS.get(study, ""), "tasks": page_tasks}
                file_name = f"{study}_{rater}.html"
                atomic_write_text(tmp / "pages" / file_name, render_page(page_data))
                key["pages"][page_id] = {"study": study, "rater": rater, "tasks": mine, "file": f"pages/{file_name}"}
                manifest_pages.append({"file": f"pages/{file_name}", "study": study, "rater": rater,
                                       "page_id": page_id, "tasks": len(mine)})
        manifest = {"format": "srpo-human-eval-pages/1", "export_id": export_id, "pages": manifest_pages,
                    "studies": {s: {"prompts": len(sample), "models": len(models), "raters_per_prompt": per,
                                    "num_raters": slots} for s, models, sample, per, slots in studies}}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
        atomic_write_text(tmp / INDEX_HTML, _overview(manifest, cfg))
    if store_key is not None:
        store_key(key)
    if cfg.output_dir:
        publish_pages(out_dir, cfg.output_dir)
    return HumanEvalPages(out_dir), key


def _check_categories(study: str, cats: list[str], by_cat: dict[str, list[int]]) -> None:
    unknown = [c for c in cats if c not in by_cat]
    if unknown:
        raise ValueError(f"human_eval.{study}.categories {unknown} are not in the evaluation (it has {sorted(by_cat)})")
    if not cats:
        raise ValueError(f"the {study} study found no benchmark categories to sample from")


def export_location(destination: str, export_id: str) -> str:
    """Where :func:`publish_pages` puts an export: ``<destination>/<export_id>``."""
    return f"{destination.rstrip('/')}/{export_id}"


def published_files(folder: Path) -> list[Path]:
    """What raters get, in the order it is copied: the pages, then ``manifest.json`` (never the key)."""
    pages = sorted(p for p in (folder / "pages").rglob("*") if p.is_file())
    return [*pages, folder / "manifest.json"]


def publish_pages(folder: Path, destination: str) -> str:
    """Copy an export's pages and manifest to ``<destination>/<export_id>/`` (local or fsspec URL).

    The folder is emptied first (only an unfinished copy of this same export can be there) and
    ``manifest.json`` is written last, so a folder with a manifest holds exactly that export's
    pages. Returns the folder's location.
    """
    import fsspec

    export_id = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["export_id"]
    location = export_location(destination, export_id)
    fs, root = fsspec.core.url_to_fs(location)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    for path in published_files(folder):
        target = f"{root}/{path.relative_to(folder).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)
    return location


def _overview(manifest: dict, cfg: HumanEvalConfig) -> str:
    rows = [[p["study"], p["rater"], p["tasks"], p["file"]] for p in manifest["pages"]]
    studies = [[s, v["prompts"], v["models"], v["raters_per_prompt"], v["num_raters"]]
               for s, v in manifest["studies"].items()]
    body = (f"<p>Export <code>{esc(manifest['export_id'])}</code>. Send each rater their page; the key that "
            "un-blinds the results is the separate <code>human_eval_key</code> artifact.</p>"
            + table(["study", "prompts", "models per prompt", "raters per prompt", "rater slots"], studies)
            + table(["study", "rater", "prompts", "file"], rows))
    return page(f"{cfg.title}: annotation pages", body)
