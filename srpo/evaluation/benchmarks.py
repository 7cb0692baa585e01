"""Benchmark prompt sets: the HPDv2 benchmark layout, and plain text / CSV prompt lists.

A benchmark is an ordered list of prompts with a category each. The order fixes each prompt's
generation seed (``42 + index * 1000``): HPDv2 prompts are numbered category by category in the
order ``anime, concept-art, paintings, photo``, each file in its own order.

HPDv2 layout (the HPSv2 repository's ``benchmark/`` folder, local or ``s3://``)::

    <folder>/anime.json        ["prompt", ...]   800 prompts in the official release
    <folder>/concept-art.json
    <folder>/paintings.json
    <folder>/photo.json

Style variants (the paired style study) are appended after the benchmark prompts as
categories ``style/<word>``: the first ``num_prompts`` prompts of one category with a style
word added by a template.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from srpo.evaluation.config import HPDV2_CATEGORIES, STYLE_CATEGORY_PREFIX, BenchmarkConfig
from srpo.io import resolve_local
from srpo.prompts import normalize_prompt


@dataclass
class Benchmark:
    """Prompts and their categories, index-aligned (``categories[i]`` is the category of ``prompts[i]``)."""

    prompts: list[str]
    categories: list[str]
    name: str = "benchmark"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.categories):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.categories)} categories")

    def __len__(self) -> int:
        return len(self.prompts)

    def category_names(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(self.categories))


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
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source!r} is not UTF-8 text ({err.reason}): re-save it as UTF-8") from err
    if fmt == "txt":
        prompts = [normalize_prompt(line) for line in text.splitlines() if line.strip()]
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


def add_style_variants(bench: Benchmark, words: list[str], category: str, num_prompts: int,
                       template: str) -> Benchmark:
    """Append ``template.format(prompt=p, word=w)`` for the first prompts of ``category``, per word."""
    base = [p for p, c in zip(bench.prompts, bench.categories) if c == category][:num_prompts]
    if not base:
        raise ValueError(f"style variants need prompts of category {category!r}, but the benchmark has only "
                         f"{bench.category_names()}: set style_variants.category")
    prompts, cats = list(bench.prompts), list(bench.categories)
    for word in words:
        prompts += [template.format(prompt=p, word=word) for p in base]
        cats += [STYLE_CATEGORY_PREFIX + word] * len(base)
    return Benchmark(prompts, cats, name=bench.name, meta={**bench.meta, "style_words": list(words)})


def load_benchmark(cfg: BenchmarkConfig) -> Benchmark:
    """The prompt set that ``cfg`` describes, filtered and with style variants appended."""
    fmt = cfg.format
    if fmt == "auto":
        local = cfg.source[len("file://"):] if cfg.source.startswith("file://") else cfg.source
        is_dir = Path(local).expanduser().is_dir() if "://" not in local else not Path(local).suffix
        fmt = "hpdv2" if is_dir else "auto"
    if fmt == "hpdv2":
        bench = load_hpdv2(cfg.source, cfg.expected_per_category)
    else:
        bench = load_prompt_list(cfg.source, fmt, cfg.column, cfg.category_column)
    if cfg.categories is not None:
        unknown = sorted(set(cfg.categories) - set(bench.categories))
        if unknown:
            raise ValueError(f"benchmark.categories {unknown} are not in {cfg.source!r} (it has "
                             f"{bench.category_names()})")
        keep = [i for i, c in enumerate(bench.categories) if c in cfg.categories]
        bench = Benchmark([bench.prompts[i] for i in keep], [bench.categories[i] for i in keep], bench.name, bench.meta)
    if cfg.per_category is not None:
        seen: dict[str, int] = {}
        keep = []
        for i, c in enumerate(bench.categories):
            seen[c] = seen.get(c, 0) + 1
            if seen[c] <= cfg.per_category:
                keep.append(i)
        bench = Benchmark([bench.prompts[i] for i in keep], [bench.categories[i] for i in keep], bench.name, bench.meta)
    if not bench.prompts:
        raise ValueError(f"the benchmark {cfg.source!r} has no prompts: check the file")
    if cfg.style_variants is not None:
        sv = cfg.style_variants
        bench = add_style_variants(bench, sv.words, sv.category, sv.num_prompts, sv.template)
    return bench
