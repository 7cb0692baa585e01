"""GenEval and DeQA: adapters around programs that run in their own (heavy) environments.

Neither metric is reimplemented. An adapter either runs a command over the generated images
or reads a result file that such a run wrote earlier:

- ``command``: an argv list. ``{images}`` becomes a folder with the images, ``{metadata}`` its
  ``metadata.jsonl`` (one ``{"file_name", "prompt", "category", "index"}`` per image) and
  ``{output}`` the result file the command must write. The command runs without a shell; a
  non-zero exit, a timeout or a missing result file is an error that shows its output.
- ``results``: result files (local or ``s3://``) to read instead, one per model: ``{model}`` in
  the path becomes the model's name. Without ``{model}`` the path can serve one model only
  (:meth:`ExternalMetric.check_models` refuses it for several).

Images are named by their benchmark index (``<index:05d>.png``; GenEval:
``<index:05d>/samples/0000.png``), so the names are the same for every model: only the
``{model}`` placeholder tells one model's result file from another's. A result file must score
exactly the images written for that model (no missing and no extra names).

Result formats read:

- **DeQA** (DeQA-Score, a 1-5 quality score per image): a JSON object ``{file_name: score}``,
  JSON lines ``{"file_name" | "filename" | "image": ..., "score": ...}``, or a CSV with columns
  ``file_name`` (or ``filename``/``image``) and ``score``.
- **GenEval**: its ``results.jsonl`` (one line per image with ``filename`` and ``correct``, plus
  ``tag``); the score of an image is 1.0 when ``correct`` else 0.0. GenEval's own overall is the
  mean over its task tags of the per-tag accuracy, which is what the report's macro average over
  categories gives when the benchmark's categories are GenEval's tags. For GenEval the image
  folder uses its layout (``<index:05d>/samples/0000.png`` and ``<index:05d>/metadata.jsonl``
  holding the prompt's whole GenEval record, ``include``/``exclude`` specs included); prompts
  without such a record (any benchmark format but ``geneval``) are refused, because GenEval's
  evaluator counts an image without ``include`` clauses as correct.

Result entries are matched to images by file name (the base name, so absolute paths work).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from srpo.evaluation.config import MODEL_PLACEHOLDER, check_results_per_model
from srpo.evaluation.metrics.base import Metric
from srpo.io import resolve_local

DEFAULT_TIMEOUT_S = 24 * 3600.0
_NAME_KEYS = ("file_name", "filename", "image", "path")


class ExternalMetric(Metric):
    """A metric computed by an external program (see the module docstring)."""

    external = True

    def __init__(self, name: str, *, command: Sequence[str] | None = None, results: str | None = None,
                 timeout_s: float | None = None) -> None:
        super().__init__(batch_size=1 << 30)
        if (command is None) == (results is None):
            raise ValueError(f"metric {name!r}: give exactly one of command or results")
        self.name, self.command, self.results = name, list(command) if command else None, results
        self.timeout_s = float(timeout_s or DEFAULT_TIMEOUT_S)
        self._models_read: list[str] = []  # models scored from a `results` path without {model}

    # -- the interface ----------------------------------------------------------------------

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Write ``images`` to a temporary folder and score the files (indices ``0..B-1``)."""
        from srpo.evaluation.images import save_png

        with tempfile.TemporaryDirectory(prefix=f"srpo-{self.name}-") as tmp:
            paths = [save_png(img, Path(tmp) / f"{i:05d}.png") for i, img in enumerate(images)]
            return torch.tensor(self.score_files(paths, prompts), dtype=torch.float32)

    def check_models(self, models: Sequence[str]) -> None:
        """Refuse one ``results`` file for several models (every model would get the same scores)."""
        check_results_per_model(self.name, self.results, models)

    def check_records(self, records: Sequence[dict | None]) -> None:
        """Refuse prompts this metric cannot score (plain metrics need nothing beyond the prompt)."""

    def score_files(self, paths: Sequence[Path], prompts: Sequence[str], categories: Sequence[str] | None = None,
                    *, indices: Sequence[int] | None = None, records: Sequence[dict | None] | None = None,
                    model: str | None = None) -> list[float]:
        """Scores of the image files of ``model``; ``indices`` name the images (default ``0..N-1``).

        ``records``: each prompt's benchmark record (GenEval's specs) or ``None``.
        """
        n = len(paths)
        if len(prompts) != n:
            raise ValueError(f"got {n} images but {len(prompts)} prompts")
        categories = list(categories) if categories is not None else ["all"] * n
        indices = list(indices) if indices is not None else list(range(n))
        records = list(records) if records is not None else [None] * n
        if not len(categories) == len(indices) == len(records) == n:
            raise ValueError(f"got {n} images but {len(categories)} categories, {len(indices)} indices and "
                             f"{len(records)} records: give one of each per image")
        self.check_records(records)
        with tempfile.TemporaryDirectory(prefix=f"srpo-{self.name}-") as tmp:
            folder = Path(tmp) / "images"
            items = [{"path": Path(p), "prompt": pr, "category": c, "index": int(i), "record": r}
                     for p, pr, c, i, r in zip(paths, prompts, categories, indices, records)]
            names = self.write_layout(folder, items)
            if self.results is not None:
                where = self.results_location(model)
                result_file = resolve_local(where)
            else:
                where = "the command output"
                result_file = Path(tmp) / f"{self.name}_results{self.result_suffix}"
                self.run(folder, folder / "metadata.jsonl", result_file)
            by_name = self.read_results(result_file)
        check_coverage(by_name, names, f"{self.name} results in {where}")
        return [float(by_name[n]) for n in names]

    # -- pieces -----------------------------------------------------------------------------

    result_suffix = ".json"

    def results_location(self, model: str | None) -> str:
        """The ``results`` path for ``model`` (its ``{model}`` placeholder filled).

        A path without the placeholder serves one model: asking it for a second model raises.
        """
        if MODEL_PLACEHOLDER not in self.results:
            if model is not None and model not in self._models_read:
                self.check_models([*self._models_read, model])
                self._models_read.append(model)
            return self.results
        if model is None:
            raise ValueError(f"{self.name}: results {self.results!r} names one file per model ({MODEL_PLACEHOLDER}), "
                             "but no model name was given: score through the evaluation runner, or give the "
                             "file's path without the placeholder")
        return self.results.replace(MODEL_PLACEHOLDER, model)

    def write_layout(self, folder: Path, items: list[dict]) -> list[str]:
        """Copy the images into ``folder`` (flat, ``<index:05d>.png``) with ``metadata.jsonl``; returns the names."""
        folder.mkdir(parents=True)
        names, lines = [], []
        for it in items:
            name = f"{it['index']:05d}{it['path'].suffix or '.png'}"
            shutil.copyfile(it["path"], folder / name)
            names.append(name)
            lines.append(_metadata_line(name, it))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return names

    def run(self, images: Path, metadata: Path, output: Path) -> None:
        """Run the command with its placeholders filled; errors show what it printed."""
        subs = {"{images}": str(images), "{metadata}": str(metadata), "{output}": str(output)}
        argv = [_substitute(arg, subs) for arg in self.command]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError as err:
            raise RuntimeError(f"{self.name}: cannot run {argv[0]!r} ({err}): install the metric's environment "
                               "or give `results` with a file it wrote") from err
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"{self.name}: {argv[0]!r} did not finish within {self.timeout_s:.0f} s: "
                               "raise timeout_s") from err
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited with status {proc.returncode}:\n"
                               f"{(proc.stdout + proc.stderr)[-2000:]}")
        if not output.is_file():
            raise RuntimeError(f"{self.name}: the command finished but wrote no result file at {output} (the "
                               "{output} placeholder)")

    def read_results(self, path: Path) -> dict[str, float]:
        return read_score_file(path, self.name)


class GenEvalMetric(ExternalMetric):
    """GenEval: per-image correctness (0/1) from its ``results.jsonl``."""

    result_suffix = ".jsonl"

    def check_records(self, records: Sequence[dict | None]) -> None:
        """Every prompt needs its GenEval record with ``include`` clauses (else GenEval scores it correct)."""
        bare = [k for k, r in enumerate(records) if not (isinstance(r, dict) and r.get("include"))]
        if bare:
            raise ValueError(f"{self.name}: {len(bare)} of {len(records)} prompts carry no GenEval include specs "
                             f"(e.g. positions {bare[:3]}); GenEval would count every such image as correct. Use "
                             "benchmark.format: geneval with GenEval's prompts/evaluation_metadata.jsonl")

    def write_layout(self, folder: Path, items: list[dict]) -> list[str]:
        """GenEval's layout: ``<index:05d>/metadata.jsonl`` (the prompt's record) + ``<index:05d>/samples/0000.png``,
        and a global metadata.jsonl."""
        folder.mkdir(parents=True)
        names, lines = [], []
        for it in items:
            prompt_dir = folder / f"{it['index']:05d}"
            sample = prompt_dir / "samples" / "0000.png"
            sample.parent.mkdir(parents=True)
            shutil.copyfile(it["path"], sample)
            # GenEval reads this file with json.load: one object, the line of evaluation_metadata.jsonl
            (prompt_dir / "metadata.jsonl").write_text(json.dumps(it["record"], ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
            names.append(f"{it['index']:05d}/samples/0000.png")
            lines.append(_metadata_line(names[-1], it))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return names

    def read_results(self, path: Path) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, record in enumerate(_json_lines(path, self.name), 1):
            if "filename" not in record or "correct" not in record:
                raise ValueError(f"{path}: line {n} lacks 'filename' or 'correct': not a GenEval results.jsonl")
            _put(out, _tail(record["filename"], 3), 1.0 if record["correct"] else 0.0, path, self.name)
        return out


def _metadata_line(name: str, item: dict) -> str:
    """One line of the folder's ``metadata.jsonl``: ``{"file_name", "prompt", "category", "index"}``."""
    return json.dumps({"file_name": name, "prompt": item["prompt"], "category": item["category"],
                       "index": item["index"]}, ensure_ascii=False)


def check_coverage(by_name: dict[str, float], names: Sequence[str], where: str) -> None:
    """The result entries must be exactly ``names``: a missing or an extra one means another run's file."""
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{where} have no score for {len(missing)} of {len(names)} images (e.g. {missing[:3]}): "
                         "the result file must name every image by its file name")
    extra = sorted(set(by_name) - set(names))
    if extra:
        raise ValueError(f"{where} score {len(extra)} images that this evaluation did not write (e.g. {extra[:3]}): "
                         "the file belongs to another prompt set or run; give the file written for exactly these "
                         "images (named by benchmark index)")


def _put(out: dict[str, float], name: str, score: float, path: Path, metric: str) -> None:
    if name in out:
        raise ValueError(f"{metric} result file {path} scores {name!r} twice: give one entry per image")
    out[name] = score


def _substitute(arg: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        arg = arg.replace(key, value)
    return arg


def _tail(path: str, parts: int) -> str:
    """The last ``parts`` components of ``path`` joined by ``/`` (GenEval names ``<i>/samples/<k>.png``)."""
    return "/".join(Path(str(path)).parts[-parts:])


def _json_lines(path: Path, name: str) -> list[dict]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} result file {path}: line {n} is not JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{name} result file {path}: line {n} is not a JSON object")
        records.append(record)
    return records


def read_score_file(path: Path, name: str = "metric") -> dict[str, float]:
    """``{file base name: score}`` from a JSON object, JSON lines or CSV result file."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    out: dict[str, float] = {}
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        key = next((k for k in _NAME_KEYS if rows and k in rows[0]), None)
        if key is None or "score" not in rows[0]:
            raise ValueError(f"{name} result file {path} needs columns file_name and score, has "
                             f"{list(rows[0]) if rows else 'no rows'}")
        for r in rows:
            _put(out, Path(r[key]).name, float(r["score"]), path, name)
        return out
    if stripped.startswith("{") and "\n{" not in stripped.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} result file {path} is not valid JSON ({err.msg} at line {err.lineno})") from err
        if all(isinstance(v, (int, float)) for v in data.values()):
            for k, v in data.items():
                _put(out, Path(k).name, float(v), path, name)
            return out
        records = [data]
    else:
        records = _json_lines(path, name)
    for n, r in enumerate(records, 1):
        key = next((k for k in _NAME_KEYS if k in r), None)
        if key is None or "score" not in r:
            raise ValueError(f"{name} result file {path}: record {n} needs a file name ({'/'.join(_NAME_KEYS)}) "
                             "and a score")
        _put(out, Path(str(r[key])).name, float(r["score"]), path, name)
    return out


def load_external_metric(cfg) -> ExternalMetric:
    cls = GenEvalMetric if cfg.name == "geneval" else ExternalMetric
    return cls(cfg.name, command=cfg.command, results=cfg.results, timeout_s=cfg.timeout_s)
