"""Benchmark prompt sets: the HPDv2 layout (local and fsspec URLs), text and CSV lists, style variants."""

from __future__ import annotations

import json

import fsspec
import pytest

from srpo.evaluation.benchmarks import load_benchmark
from srpo.evaluation.config import BenchmarkConfig, StyleVariantsConfig

CATS = ("anime", "concept-art", "paintings", "photo")


def write_hpdv2(folder, n=3, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    for c in CATS:
        data = overrides.get(c, [f"{c} prompt {i}" for i in range(n)])
        (folder / f"{c}.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return folder


def test_hpdv2_folder_gives_prompts_in_category_order(tmp_path):
    bench = load_benchmark(BenchmarkConfig(source=str(write_hpdv2(tmp_path / "hpd")), expected_per_category=3))
    assert bench.category_names() == list(CATS) and len(bench) == 12
    assert bench.prompts[:2] == ["anime prompt 0", "anime prompt 1"] and bench.categories[3] == "concept-art"
    assert bench.prompts[-1] == "photo prompt 2"


def test_hpdv2_from_an_fsspec_url(tmp_path):
    fs = fsspec.filesystem("memory")
    for c in CATS:
        fs.pipe(f"/bench-{tmp_path.name}/hpd/{c}.json", json.dumps([f"{c} {i}" for i in range(2)]).encode())
    bench = load_benchmark(BenchmarkConfig(source=f"memory://bench-{tmp_path.name}/hpd", format="hpdv2"))
    assert len(bench) == 8 and bench.prompts[0] == "anime 0"


def test_missing_file_names_it_and_the_fix(tmp_path):
    folder = write_hpdv2(tmp_path / "hpd")
    (folder / "paintings.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"paintings\.json' is missing.*needs the four files"):
        load_benchmark(BenchmarkConfig(source=str(folder)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark(BenchmarkConfig(source=str(tmp_path / "nowhere"), format="hpdv2"))


@pytest.mark.parametrize("content, message", [
    ("[\"a\", ", "not valid UTF-8 JSON"),
    ('{"prompts": ["a"]}', "holds a JSON dict, not a list"),
    ('["ok", 3, ""]', r"entries \[1, 2\] are not non-empty strings"),
])
def test_malformed_files_are_refused(tmp_path, content, message):
    folder = write_hpdv2(tmp_path / "hpd", photo=content)
    with pytest.raises(ValueError, match=message):
        load_benchmark(BenchmarkConfig(source=str(folder)))


def test_wrong_count_is_refused_when_expected(tmp_path):
    folder = write_hpdv2(tmp_path / "hpd", anime=["just one"])
    with pytest.raises(ValueError, match="has 1 prompts, expected 3"):
        load_benchmark(BenchmarkConfig(source=str(folder), expected_per_category=3))


def test_text_and_csv_lists(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n  a   dog \n")
    bench = load_benchmark(BenchmarkConfig(source=str(tmp_path / "p.txt")))
    assert bench.prompts == ["a cat", "a dog"] and bench.categories == ["all", "all"]
    (tmp_path / "p.csv").write_text('prompt,category\n"a cat, sitting",animals\na car,\n')
    bench = load_benchmark(BenchmarkConfig(source=str(tmp_path / "p.csv")))
    assert bench.prompts == ["a cat, sitting", "a car"] and bench.categories == ["animals", "all"]
    with pytest.raises(ValueError, match="has no column 'text'"):
        load_benchmark(BenchmarkConfig(source=str(tmp_path / "p.csv"), column="text"))


def test_filters_and_style_variants(tmp_path):
    folder = write_hpdv2(tmp_path / "hpd", n=4)
    cfg = BenchmarkConfig(source=str(folder), categories=["anime", "photo"], per_category=2,
                          style_variants=StyleVariantsConfig(words=["Comic", "Oil painting"], num_prompts=1))
    bench = load_benchmark(cfg)
    assert bench.categories == ["anime", "anime", "photo", "photo", "style/Comic", "style/Oil painting"]
    assert bench.prompts[4:] == ["photo prompt 0, Comic style", "photo prompt 0, Oil painting style"]
    with pytest.raises(ValueError, match="not in"):
        load_benchmark(BenchmarkConfig(source=str(folder), categories=["manga"]))
    with pytest.raises(ValueError, match=r"must contain both \{prompt\} and \{word\}"):
        StyleVariantsConfig(words=["x"], template="{prompt} only")
