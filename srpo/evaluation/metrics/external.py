"""GenEval and DeQA: adapters around programs that run in their own (heavy) environments.

Neither metric is reimplemented. An adapter either runs a command over the generated images
or reads a result file that such a run wrote earlier:

- ``command``: an argv list. ``{images}`` becomes a folder with the images, ``{metadata}`` its
  ``metadata.jsonl`` (one ``{"file_name", "prompt", "category", "index"}`` per image) and
  ``{output}`` the result file the command must write. The command runs without a shell; a
  non-zero exit, a timeout or a missing result file is an error that shows its output.
- ``results``: a result file (local or ``s3://``) to read instead.

Result formats read:

- **DeQA** (DeQA-Score, a 1-5 quality score per image): a JSON object ``{file_name: score}``,
  JSON lines ``{"file_name" | "filename" | "image": ..., "score": ...}``, or a CSV with columns
  ``file_name`` (or ``filename``/``image``) and ``score``.
- **GenEval**: its ``results.jsonl`` (one line per image with ``filename`` and ``correct``, plus
  ``tag``); the score of an image is 1.0 when ``correct`` else 0.0. GenEval's own overall is the
  mean over its task tags of the per-tag accuracy, which is what the report's macro average over
  categories gives when the benchmark's categories are GenEval's tags. For GenEval the image
  folder uses its layout (``<index:05d>/samples/0000.png`` and ``<index:05d>/metadata.jsonl``).

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

    # -- the interface ----------------------------------------------------------------------

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Write ``images`` to a temporary folder and score the files."""
        from srpo.evaluation.images import save_png

        with tempfile.TemporaryDirectory(prefix=f"srpo-{self.name}-") as tmp:
            paths = [save_png(img, Path(tmp) / f"{i:05d}.png") for i, img in enumerate(images)]
            return torch.tensor(self.score_files(paths, prompts), dtype=torch.float32)

    def score_files(self, paths: Sequence[Path], prompts: Sequence[str],
                    categories: Sequence[str] | None = None) -> list[float]:
        if len(paths) != len(prompts):
            raise ValueError(f"got {len(paths)} images but {len(prompts)} prompts")
        categories = list(categories) if categories is not None else ["all"] * len(paths)
        with tempfile.TemporaryDirectory(prefix=f"srpo-{self.name}-") as tmp:
            folder = Path(tmp) / "images"
            names = self.write_layout(folder, [Path(p) for p in paths], list(prompts), categories)
            if self.results is not None:
                result_file = resolve_local(self.results)
            else:
                result_file = Path(tmp) / f"{self.name}_results{self.result_suffix}"
                self.run(folder, folder / "metadata.jsonl", result_file)
            by_name = self.read_results(result_file)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"{self.name} results in {self.results or 'the command output'} have no score for "
                             f"{len(missing)} of {len(names)} images (e.g. {missing[:3]}): the result file must name "
                             "every image by its file name")
        return [float(by_name[n]) for n in names]

    # -- pieces -----------------------------------------------------------------------------

    result_suffix = ".json"

    def write_layout(self, folder: Path, paths: list[Path], prompts: list[str], categories: list[str]) -> list[str]:
        """Copy the images into ``folder`` (flat) with ``metadata.jsonl``; returns the names to match."""
        folder.mkdir(parents=True)
        names, lines = [], []
        for i, (path, prompt, category) in enumerate(zip(paths, prompts, categories)):
            name = f"{i:05d}{path.suffix or '.png'}"
            shutil.copyfile(path, folder / name)
            names.append(name)
            lines.append(json.dumps({"file_name": name, "prompt": prompt, "category": category, "index": i},
                                    ensure_ascii=False))
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

    def write_layout(self, folder: Path, paths: list[Path], prompts: list[str], categories: list[str]) -> list[str]:
        """GenEval's layout: ``<i:05d>/metadata.jsonl`` + ``<i:05d>/samples/0000.png``, and a global metadata.jsonl."""
        folder.mkdir(parents=True)
        names, lines = [], []
        for i, (path, prompt, category) in enumerate(zip(paths, prompts, categories)):
            sample = folder / f"{i:05d}" / "samples" / "0000.png"
            sample.parent.mkdir(parents=True)
            shutil.copyfile(path, sample)
            record = json.dumps({"prompt": prompt, "tag": category}, ensure_ascii=False)
            (folder / f"{i:05d}" / "metadata.jsonl").write_text(record + "\n", encoding="utf-8")
            names.append(f"{i:05d}/samples/0000.png")
            lines.append(json.dumps({"file_name": names[-1], "prompt": prompt, "category": category, "index": i},
                                    ensure_ascii=False))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return names

    def read_results(self, path: Path) -> dict[str, float]:
        out = {}
        for n, record in enumerate(_json_lines(path, self.name), 1):
            if "filename" not in record or "correct" not in record:
                raise ValueError(f"{path}: line {n} lacks 'filename' or 'correct': not a GenEval results.jsonl")
            out[_tail(record["filename"], 3)] = 1.0 if record["correct"] else 0.0
        return out


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
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        key = next((k for k in _NAME_KEYS if rows and k in rows[0]), None)
        if key is None or "score" not in rows[0]:
            raise ValueError(f"{name} result file {path} needs columns file_name and score, has "
                             f"{list(rows[0]) if rows else 'no rows'}")
        return {Path(r[key]).name: float(r["score"]) for r in rows}
    if stripped.startswith("{") and "\n{" not in stripped.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} result file {path} is not valid JSON ({err.msg} at line {err.lineno})") from err
        if all(isinstance(v, (int, float)) for v in data.values()):
            return {Path(k).name: float(v) for k, v in data.items()}
        records = [data]
    else:
        records = _json_lines(path, name)
    out = {}
    for n, r in enumerate(records, 1):
        key = next((k for k in _NAME_KEYS if k in r), None)
        if key is None or "score" not in r:
            raise ValueError(f"{name} result file {path}: record {n} needs a file name ({'/'.join(_NAME_KEYS)}) "
                             "and a score")
        out[Path(str(r[key])).name] = float(r["score"])
    return out


def load_external_metric(cfg) -> ExternalMetric:
    cls = GenEvalMetric if cfg.name == "geneval" else ExternalMetric
    return cls(cfg.name, command=cfg.command, results=cfg.results, timeout_s=cfg.timeout_s)
