"""Benchmark prompt sets: the HPDv2 benchmark layout, GenEval's metadata, plain text / CSV prompt lists.

A benchmark is an ordered list of prompts with a category each. A prompt's position in the
full benchmark is its *index*, and the index fixes its generation seed (``42 + index * 1000``):
HPDv2 prompts are numbered category by category in the order ``anime, concept-art, paintings,
photo``, each file in its own order; the other formats number lines / rows / records in file
order. Subsets (``categories``, ``per_category``) keep each prompt's index, so a prompt gets
the same seed and initial noise in a subset as in the full run.

HPDv2 layout (the HPSv2 repository's ``benchmark/`` folder, local or ``s3://``)::

    <folder>/anime.json        ["prompt", ...]   800 prompts in the official release
    <folder>/concept-art.json
    <folder>/paintings.json
    <folder>/photo.json

GenEval (its ``prompts/evaluation_metadata.jsonl``): one JSON object per line, for example::

    {"tag": "counting", "include": [{"class": "clock", "count": 2}],
     "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}

``include`` (required) and ``exclude`` (optional) are lists of ``{"class", "count"}`` clauses,
optionally with ``color`` or ``position: [relation, include_index]``. The category of a prompt
is its ``tag``, and the whole record is kept (:attr:`Benchmark.records`): GenEval's evaluator
reads it from each image folder's ``metadata.jsonl``.

Style variants (the paired style study) are appended after the benchmark prompts as
categories ``style/<word>``: the first ``num_prompts`` prompts of one category with a style
word added by a template. Their indices follow the full benchmark's:
``len(full benchmark) + word_position * num_prompts + j``, whatever subset is evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from srpo.evaluation.config import HPDV2_CATEGORIES, STYLE_CATEGORY_PREFIX, BenchmarkConfig
from srpo.io import resolve_local, strip_file_scheme
from srpo.prompts import normalize_prompt, read_utf8_text, text_lines


@dataclass
class Benchmark:
    """Prompts with their categories, benchmark indices and source records, position-aligned.

    ``categories[k]``, ``indices[k]`` and ``records[k]`` belong to ``prompts[k]``. ``indices``
    are the prompts' positions in the full benchmark (they fix the seeds; default
    ``0..N-1``); ``records`` the benchmark's full record per prompt where the format has one
    (GenEval's ``{"prompt", "tag", "include", ...}``), else ``None``.
    """

    prompts: list[str]
    categories: list[str]
    name: str = "benchmark"
    meta: dict = field(default_factory=dict)
    indices: Optional[list[int]] = None
    records: Optional[list[Optional[dict]]] = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.categories) != n:
            raise ValueError(f"{n} prompts but {len(self.categories)} categories")
        self.indices = list(range(n)) if self.indices is None else [int(i) for i in self.indices]
        if len(self.indices) != n:
            raise ValueError(f"{n} prompts but {len(self.indices)} indices: give one benchmark index per prompt")
        if len(set(self.indices)) != n or any(i < 0 for i in self.indices):
            raise ValueError("benchmark indices must be distinct and non-negative (each fixes one prompt's seed), "
                             f"got {self.indices[:8]}{' ...' if n > 8 else ''}")
        self.records = [None] * n if self.records is None else list(self.records)
        if len(self.records) != n:
            raise ValueError(f"{n} prompts but {len(self.records)} records: give one record (or None) per prompt")

    def __len__(self) -> int:
        return len(self.prompts)

    def category_names(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(self.categories))

    def subset(self, positions: Sequence[int]) -> "Benchmark":
        """The prompts at ``positions`` (in that order), each keeping its index and record."""
        return Benchmark([self.prompts[k] for k in positions], [self.categories[k] for k in positions], self.name,
                         self.meta, [self.indices[k] for k in positions], [self.records[k] for k in positions])


def load_hpdv2(source: str, expected_per_category: int | None = None,
               categories: tuple[str, ...] = HPDV2_CATEGORIES) -> Benchmark:
    """The HPDv2 benchmark prompts from a folder (local path or fsspec URL).

    Raises:
        FileNotFoundError: the folder or one of the four JSON files is missing (names the file).
        ValueError: a file is not a JSON list of non-empty strings, or has the wrong count.
    """
    try:
        folder = resolve_local(source)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"HPDv2 benchmark folder {source!r} does not exist: give the folder (local or "
                                f"s3://) holding {', '.join(c + '.json' for c in categories)} (the HPSv2 "
                                "repository's benchmark/ prompts)") from err
    if not folder.is_dir():
        raise ValueError(f"HPDv2 benchmark source {source!r} is a file: give the folder that holds "
                         f"{', '.join(c + '.json' for c in categories)}")
    prompts, cats = [], []
    for category in categories:
        path = folder / f"{category}.json"
        where = f"{source.rstrip('/')}/{category}.json"
        if not path.is_file():
            present = sorted(p.name for p in folder.iterdir())
            raise FileNotFoundError(f"HPDv2 benchmark file {where!r} is missing (the folder holds {present[:8]}): "
                                    f"the benchmark needs the four files {', '.join(c + '.json' for c in categories)}")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"HPDv2 benchmark file {where!r} is not valid UTF-8 JSON ({err}): re-download it; it "
                             "must be a JSON list of prompt strings") from err
        if not isinstance(data, list):
            raise ValueError(f"HPDv2 benchmark file {where!r} holds a JSON {type(data).__name__}, not a list of "
                             "prompt strings")
        bad = [i for i, p in enumerate(data) if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ValueError(f"HPDv2 benchmark file {where!r}: entries {bad[:5]} are not non-empty strings; every "
                             "entry must be a prompt string")
        if expected_per_category is not None and len(data) != expected_per_category:
            raise ValueError(f"HPDv2 benchmark file {where!r} has {len(data)} prompts, expected "
                             f"{expected_per_category}: check the file, or unset expected_per_category")
        prompts += [normalize_prompt(p) for p in data]
        cats += [category] * len(data)
    return Benchmark(prompts, cats, name="hpdv2", meta={"source": source})


def load_prompt_list(source: str, fmt: str = "auto", column: str = "prompt",
                     category_column: str = "category") -> Benchmark:
    """A ``.txt`` (one prompt per line, category ``all``) or ``.csv`` (header row) prompt list."""
    path = resolve_local(source)
    if fmt == "auto":
        fmt = {".txt": "txt", ".csv": "csv"}.get(path.suffix.lower(), "")
        if not fmt:
            raise ValueError(f"cannot tell the format of {source!r} from its suffix: use a .txt or .csv file, a "
                             "folder in the HPDv2 layout, or set benchmark.format")
    text = read_utf8_text(path, source)
    if fmt == "txt":
        prompts = [normalize_prompt(line) for line in text_lines(text) if line.strip()]
        return Benchmark(prompts, ["all"] * len(prompts), name=Path(source).stem, meta={"source": source})
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        fields = reader.fieldnames or []
        if column not in fields:
            raise ValueError(f"{source!r} has no column {column!r}; its columns are {list(fields)}: set "
                             "benchmark.column")
        rows = list(reader)
    except csv.Error as err:
        raise ValueError(f"{source!r} is not valid CSV (line {reader.line_num}: {err})") from err
    prompts, cats = [], []
    for row in rows:
        prompt = normalize_prompt(row.get(column) or "")
        if prompt:
            prompts.append(prompt)
            cats.append((row.get(category_column) or "").strip() or "all")
    return Benchmark(prompts, cats, name=Path(source).stem, meta={"source": source})


def load_geneval(source: str) -> Benchmark:
    """GenEval's ``evaluation_metadata.jsonl``: one prompt per record, category = ``tag``, the record kept.

    Raises:
        ValueError: a line is not a JSON object with ``prompt``, ``tag`` and non-empty
            ``include`` clauses (names the line), or the file has no records.
    """
    path = resolve_local(source)
    if path.is_dir():
        raise ValueError(f"GenEval benchmark source {source!r} is a folder: give GenEval's "
                         "prompts/evaluation_metadata.jsonl file")
    text = read_utf8_text(path, source)
    prompts, cats, records = [], [], []
    for line_no, line in enumerate(text_lines(text), 1):
        if line.strip():
            record = geneval_record(line, f"{source}:{line_no}")
            prompts.append(normalize_prompt(record["prompt"]))
            cats.append(record["tag"])
            records.append(record)
    if not records:
        raise ValueError(f"GenEval metadata {source!r} has no records: give GenEval's "
                         "prompts/evaluation_metadata.jsonl (one JSON object per line)")
    return Benchmark(prompts, cats, name="geneval", meta={"source": source}, records=records)


def geneval_record(line: str, where: str) -> dict:
    """One line of GenEval's metadata, checked: ``{"prompt", "tag", "include": [...], "exclude"?: [...]}``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"GenEval metadata {where} is not JSON ({err.msg}): each line must be one JSON object "
                         "of evaluation_metadata.jsonl") from err
    if not isinstance(record, dict):
        raise ValueError(f"GenEval metadata {where} holds a JSON {type(record).__name__}, not an object")
    for key in ("prompt", "tag"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ValueError(f"GenEval metadata {where} has no non-empty {key!r}: every record needs 'prompt', "
                             "'tag' and 'include'")
    _check_clauses(record.get("include"), "include", where)
    if "exclude" in record:
        _check_clauses(record["exclude"], "exclude", where)
    return record


def _check_clauses(clauses, key: str, where: str) -> None:
    """GenEval clauses: a list of ``{"class": str, "count": int >= 1}`` (``include``: non-empty), with an
    optional ``position: [relation, k]`` that points at an earlier include clause ``k``."""
    if not isinstance(clauses, list) or (key == "include" and not clauses):
        raise ValueError(f"GenEval metadata {where}: {key!r} must be a {'non-empty ' if key == 'include' else ''}"
                         'list of {"class", "count"} clauses; without include clauses GenEval counts every image '
                         "as correct")
    for k, clause in enumerate(clauses):
        count = clause.get("count") if isinstance(clause, dict) else None
        if not isinstance(clause, dict) or not isinstance(clause.get("class"), str) or \
                not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"GenEval metadata {where}: {key}[{k}] = {clause!r} is not a "
                             '{"class": <name>, "count": <int >= 1>} clause')
        position = clause.get("position")
        if position is not None and not (isinstance(position, list) and len(position) == 2
                                         and isinstance(position[0], str) and isinstance(position[1], int)
                                         and 0 <= position[1] < k):
            raise ValueError(f"GenEval metadata {where}: {key}[{k}].position = {position!r} must be "
                             "[relation, index of an earlier include clause]")


def add_style_variants(bench: Benchmark, words: list[str], category: str, num_prompts: int,
                       template: str, first_index: int | None = None) -> Benchmark:
    """Append ``template.format(prompt=p, word=w)`` for the first prompts of ``category``, per word.

    The variant of the ``j``-th base prompt with the ``w``-th word gets index
    ``first_index + w * num_prompts + j`` (``first_index``: the full benchmark's length, by
    default one past the largest index), so its seed does not depend on the subset evaluated.
    """
    base = [k for k, c in enumerate(bench.categories) if c == category][:num_prompts]
    if not base:
        raise ValueError(f"style variants need prompts of category {category!r}, but the benchmark has only "
                         f"{bench.category_names()}: set style_variants.category")
    first = max(bench.indices) + 1 if first_index is None else first_index
    if first <= max(bench.indices):
        raise ValueError(f"style variants would start at index {first}, inside the benchmark's indices (up to "
                         f"{max(bench.indices)}): give first_index >= the full benchmark's length")
    prompts, cats, indices = list(bench.prompts), list(bench.categories), list(bench.indices)
    for w, word in enumerate(words):
        prompts += [template.format(prompt=bench.prompts[k], word=word) for k in base]
        cats += [STYLE_CATEGORY_PREFIX + word] * len(base)
        indices += [first + w * num_prompts + j for j in range(len(base))]
    records = list(bench.records) + [None] * (len(prompts) - len(bench))
    return Benchmark(prompts, cats, name=bench.name, meta={**bench.meta, "style_words": list(words)},
                     indices=indices, records=records)


def benchmark_format(cfg: BenchmarkConfig) -> str:
    """``cfg.format``, with ``auto`` resolved: a folder is ``hpdv2``, a ``.jsonl`` file ``geneval``, else by suffix."""
    if cfg.format != "auto":
        return cfg.format
    local = strip_file_scheme(cfg.source)
    is_dir = Path(local).expanduser().is_dir() if "://" not in local else not Path(local).suffix
    if is_dir:
        return "hpdv2"
    return "geneval" if Path(local).suffix.lower() == ".jsonl" else "auto"


def keep_categories(bench: Benchmark, categories: list[str], source: str) -> Benchmark:
    """Only the prompts of ``categories`` (each keeps its index)."""
    unknown = sorted(set(categories) - set(bench.categories))
    if unknown:
        raise ValueError(f"benchmark.categories {unknown} are not in {source!r} (it has {bench.category_names()})")
    return bench.subset([k for k, c in enumerate(bench.categories) if c in categories])


def first_per_category(bench: Benchmark, per_category: int) -> Benchmark:
    """The first ``per_category`` prompts of every category (each keeps its index)."""
    seen: dict[str, int] = {}
    keep = []
    for k, c in enumerate(bench.categories):
        seen[c] = seen.get(c, 0) + 1
        if seen[c] <= per_category:
            keep.append(k)
    return bench.subset(keep)


def load_benchmark(cfg: BenchmarkConfig) -> Benchmark:
    """The prompt set that ``cfg`` describes, filtered and with style variants appended.

    Every prompt keeps its index in the full benchmark (``Benchmark.indices``), which fixes its seed.
    """
    fmt = benchmark_format(cfg)
    if fmt == "hpdv2":
        bench = load_hpdv2(cfg.source, cfg.expected_per_category)
    elif fmt == "geneval":
        bench = load_geneval(cfg.source)
    else:
        bench = load_prompt_list(cfg.source, fmt, cfg.column, cfg.category_column)
    full_size = len(bench)
    if cfg.categories is not None:
        bench = keep_categories(bench, cfg.categories, cfg.source)
    if cfg.per_category is not None:
        bench = first_per_category(bench, cfg.per_category)
    if not bench.prompts:
        raise ValueError(f"the benchmark {cfg.source!r} has no prompts: check the file")
    if cfg.style_variants is not None:
        sv = cfg.style_variants
        bench = add_style_variants(bench, sv.words, sv.category, sv.num_prompts, sv.template, first_index=full_size)
    return bench
