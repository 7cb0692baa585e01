"""Synthetic evaluation results (no generation) for the human-evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from srpo.evaluation.config import EvalReportConfig
from srpo.evaluation.human_eval.rubric import DIMENSION_KEYS
from srpo.evaluation.images import save_png
from srpo.evaluation.results import write_results

EVIL = "a cat <script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> & <b>bold</b>"


def make_results(folder: Path, models=("base", "tuned"), per_category=3,
                 categories=("anime", "concept-art", "paintings", "photo"), style_words=(), size=16):
    """An EvalResults folder with solid-colour PNGs; the first prompt is hostile HTML."""
    items, index = [], 0
    for cat in categories:
        for i in range(per_category):
            prompt = EVIL if index == 0 else f"{cat} prompt {i}"
            items.append({"index": index, "prompt": prompt, "category": cat, "seed": 42 + 1000 * index})
            index += 1
    for word in style_words:
        for i in range(per_category):
            items.append({"index": index, "prompt": f"photo prompt {i}, {word} style", "category": f"style/{word}",
                          "seed": 42 + 1000 * index})
            index += 1
    g = torch.Generator().manual_seed(0)
    for model in models:
        for it in items:
            save_png(torch.rand(3, size, size, generator=g), folder / "images" / model / f"{it['index']:05d}.png")
    scores = {model: {"hps": [0.1 * m + 0.01 * it["index"] for it in items]} for m, model in enumerate(models)}
    return write_results(folder, items, scores, EvalReportConfig(bootstrap_samples=100), {})


def rate_all(page_id, key, study, level_of, annotator=""):
    """An annotation export (as the page writes it) rating every task of ``page_id``."""
    info, records = key["pages"][page_id], []
    images = key["studies"][study]["images"]
    for task in info["tasks"]:
        mine = [i for i, v in images.items() if v["task"] == task]
        if study == "quality":
            for img in mine:
                records.append({"task": task, "image": img, **{d: level_of(images[img]["model"], d) for d in DIMENSION_KEYS}})
        else:
            records.append({"task": task, "choice": next(i for i in mine if images[i]["model"] == level_of(task))})
    return {"format": "srpo-human-eval-annotations/1", "export_id": key["export_id"], "page_id": page_id,
            "study": study, "rater": info["rater"], "annotator": annotator, "records": records}


def write_json(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)
