"""Folder-shaped results of the evaluation suite (plain data; ZenML stores them file by file).

Each is a :class:`~srpo.artifacts.ModelFolder` of a particular ``kind`` whose folder holds an
``index.html`` (the dashboard visualization), CSV tables and a JSON file with everything.
``materializers/report_folder.py`` stores them and registers the visualizations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srpo.artifacts import ModelFolder

INDEX_HTML = "index.html"


@dataclass
class ReportFolder(ModelFolder):
    """A folder with ``index.html``, CSV tables and one JSON file (``main_json``)."""

    kind: str = "report"
    main_json: str = "report.json"

    def read_json(self, name: str | None = None) -> Any:
        return json.loads((self.path / (name or self.main_json)).read_text(encoding="utf-8"))

    @property
    def index(self) -> Path:
        return self.path / INDEX_HTML

    def csv_files(self) -> list[Path]:
        return sorted(self.path.glob("*.csv"))


@dataclass
class EvalResults(ReportFolder):
    """Scores of every model, metric and prompt, with summaries, CIs and the generated images.

    ``results.json``: items, per-image scores, summary and delta rows; ``summary.csv``,
    ``deltas.csv``, ``scores.csv``; ``images/<model>/<index:05d>.png``; ``index.html``.
    """

    kind: str = "evaluation"
    main_json: str = "results.json"

    def image_path(self, model: str, index: int) -> Path:
        return self.path / "images" / model / f"{index:05d}.png"


@dataclass
class HumanEvalPages(ReportFolder):
    """The blinded annotation pages (``pages/<study>_<rater>.html``) and ``manifest.json`` (no key)."""

    kind: str = "human-eval-pages"
    main_json: str = "manifest.json"


@dataclass
class HumanEvalReport(ReportFolder):
    """Un-blinded human-evaluation results: shares of Excellent, hacking and style rates, agreement."""

    kind: str = "human-eval-report"
    main_json: str = "report.json"


@dataclass
class PromptReport(ReportFolder):
    """Word frequencies of a prompt set: ``word_frequency.csv``, ``word_frequency.svg``, ``index.html``."""

    kind: str = "prompt-analysis"
    main_json: str = "word_frequency.json"
