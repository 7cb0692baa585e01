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


# ------------------------------------------------------------- benchmark indices (seeds)

def test_subsets_keep_each_prompts_benchmark_index_and_so_its_seed(tmp_path):
    """A prompt's seed is 42 + 1000 * its index in the full benchmark, whatever subset is evaluated."""
    from srpo.evaluation.config import EvalConfig
    from srpo.evaluation.scoring import eval_seeds

    folder = write_hpdv2(tmp_path / "hpd", n=4)  # 16 prompts: photo prompt 0 is index 12

    def seed_of(prompt, **subset):
        bench = load_benchmark(BenchmarkConfig(source=str(folder), format="hpdv2", **subset))
        return dict(zip(bench.prompts, eval_seeds(bench.indices, EvalConfig())))[prompt]

    assert seed_of("photo prompt 0") == seed_of("photo prompt 0", per_category=2) == \
        seed_of("photo prompt 0", categories=["photo"]) == 42 + 12 * 1000
    bench = load_benchmark(BenchmarkConfig(source=str(folder), per_category=2))
    assert bench.indices == [0, 1, 4, 5, 8, 9, 12, 13]


def test_style_variants_are_numbered_after_the_full_benchmark(tmp_path):
    folder = write_hpdv2(tmp_path / "hpd", n=4)
    style = StyleVariantsConfig(words=["Comic", "Oil"], num_prompts=2)
    full = load_benchmark(BenchmarkConfig(source=str(folder), style_variants=style))
    subset = load_benchmark(BenchmarkConfig(source=str(folder), categories=["photo"], per_category=1,
                                            style_variants=style))
    assert full.indices[16:] == [16, 17, 18, 19]  # word w, base prompt j: 16 + 2 * w + j
    assert dict(zip(subset.prompts, subset.indices)) == {"photo prompt 0": 12, "photo prompt 0, Comic style": 16,
                                                         "photo prompt 0, Oil style": 18}
    assert all(dict(zip(full.prompts, full.indices))[p] == i for p, i in zip(subset.prompts, subset.indices))


# -------------------------------------------------------------------------------- GenEval

GENEVAL_LINES = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
     "prompt": "a photo of two clocks"},
    {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                    {"class": "dog", "count": 1, "position": ["right of", 0]}],
     "prompt": "a photo of a dog right of a teddy bear"},
    {"tag": "counting", "include": [{"class": "cat", "count": 3}], "exclude": [{"class": "cat", "count": 4}],
     "prompt": "a photo of three  cats"},
]


def write_geneval(path, lines=GENEVAL_LINES):
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in lines))
    return path


def test_geneval_metadata_keeps_each_prompts_whole_record(tmp_path):
    path = write_geneval(tmp_path / "evaluation_metadata.jsonl")
    bench = load_benchmark(BenchmarkConfig(source=str(path)))  # .jsonl: format geneval
    assert bench.name == "geneval" and bench.prompts[3] == "a photo of three cats"
    assert bench.categories == ["single_object", "counting", "position", "counting"]
    assert bench.records == GENEVAL_LINES and bench.indices == [0, 1, 2, 3]
    counting = load_benchmark(BenchmarkConfig(source=str(path), format="geneval", categories=["counting"]))
    assert counting.indices == [1, 3] and counting.records == [GENEVAL_LINES[1], GENEVAL_LINES[3]]


@pytest.mark.parametrize("line, message", [
    ("{not json", r"evaluation_metadata.jsonl:2 is not JSON"),
    ('["a photo"]', "holds a JSON list, not an object"),
    ({"tag": "single_object", "prompt": "a cat"}, r"'include' must be a non-empty list.*every image as correct"),
    ({"tag": "single_object", "prompt": "a cat", "include": []}, "'include' must be a non-empty list"),
    ({"prompt": "a cat", "include": [{"class": "cat", "count": 1}]}, "no non-empty 'tag'"),
    ({"tag": "counting", "prompt": "two cats", "include": [{"class": "cat", "count": "2"}]},
     r"include\[0\] = .* is not a \{\"class\": <name>, \"count\": <int >= 1>\} clause"),
    ({"tag": "counting", "prompt": "two cats", "include": [{"class": "cat", "count": 2}], "exclude": {"class": "cat"}},
     "'exclude' must be a list"),
    ({"tag": "position", "prompt": "x", "include": [{"class": "dog", "count": 1, "position": ["left of", 0]}]},
     r"include\[0\].position = \['left of', 0\] must be \[relation, index of an earlier include clause\]"),
])
def test_malformed_geneval_lines_are_refused_with_their_line(tmp_path, line, message):
    path = write_geneval(tmp_path / "evaluation_metadata.jsonl", [GENEVAL_LINES[0], line])
    with pytest.raises(ValueError, match=message):
        load_benchmark(BenchmarkConfig(source=str(path), format="geneval"))
