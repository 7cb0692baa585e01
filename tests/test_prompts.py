"""Prompt loading, cleaning and splitting (srpo/prompts.py)."""

from __future__ import annotations

import json

import fsspec
import pytest
from pydantic import ValidationError

from srpo.prompts import (
    PromptConfig,
    clean_prompts,
    clean_prompts_with_stats,
    load_prompts,
    prepare_prompts,
    split_prompts,
)

PROMPTS = ["a red circle on a blue background", "a green square", "a small yellow triangle, dark",
           "two bright blue circles", "a striped orange square at the top left"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))


def cfg(**kw) -> PromptConfig:
    return PromptConfig(**{"source": "unused.txt", **kw})


# ------------------------------------------------------------------------------------ loading

def test_load_txt(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    assert load_prompts(str(path)) == PROMPTS


def test_txt_lines_end_only_at_line_breaks(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("a cat\u2028on a mat\r\nform\x0cfeed\rlast".encode("utf-8"))
    assert load_prompts(str(path)) == ["a cat\u2028on a mat", "form\x0cfeed", "last"]


def test_load_json_list_of_strings_and_prompts_object(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(PROMPTS))
    b.write_text(json.dumps({"prompts": PROMPTS}))
    assert load_prompts(str(a)) == PROMPTS
    assert load_prompts(str(b)) == PROMPTS


def test_load_json_list_of_dicts_with_column(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"caption": p, "category": "photo"} for p in PROMPTS]))
    assert load_prompts(str(path), column="caption") == PROMPTS
    with pytest.raises(ValueError, match=r"record 0 has no key 'prompt'.*caption"):
        load_prompts(str(path))


def test_load_csv_column(tmp_path):
    path = tmp_path / "p.csv"
    rows = ["id,prompt,category"] + [f'{i},"{p}",photo' for i, p in enumerate(PROMPTS)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert load_prompts(str(path)) == PROMPTS


def test_load_csv_missing_column_lists_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,caption\n1,a cat\n")
    with pytest.raises(ValueError, match=r"no column 'prompt'.*\['id', 'caption'\]"):
        load_prompts(str(path))


def test_explicit_format_overrides_suffix_and_unknown_suffix_errors(tmp_path):
    path = tmp_path / "prompts.lst"
    path.write_text("a cat\na dog\n")
    assert load_prompts(str(path), format="txt") == ["a cat", "a dog"]
    with pytest.raises(ValueError, match=r"suffix '\.lst'"):
        load_prompts(str(path))


def test_load_through_fsspec_url():
    fs = fsspec.filesystem("memory")
    with fs.open("/bucket/prompts.json", "w") as f:
        f.write(json.dumps({"prompts": PROMPTS}))
    try:
        assert load_prompts("memory://bucket/prompts.json") == PROMPTS
        split = prepare_prompts(PromptConfig(source="memory://bucket/prompts.json", heldout_fraction=0.2))
        assert sorted(split.train + split.heldout) == sorted(PROMPTS)
    finally:
        fs.rm("/bucket", recursive=True)


# ----------------------------------------------------------------------------------- cleaning

def test_clean_normalises_filters_and_dedupes_with_counts():
    raw = ["  a red   circle\t on blue ", "", "   ", "ab", "x" * 501, "一只红色的猫",
           "A RED circle on BLUE", "a green square", "a red circle on blue"]
    kept, stats = clean_prompts_with_stats(raw, cfg(ascii_only=True))
    assert kept == ["a red circle on blue", "a green square"]
    assert (stats.total, stats.empty, stats.too_short, stats.too_long, stats.non_ascii, stats.duplicates,
            stats.kept) == (9, 2, 1, 1, 1, 2, 2)


def test_clean_language_filter_only_when_enabled_and_dedupe_optional():
    raw = ["一只红色的猫", "a cat", "a cat", "café au lait, 4k"]
    assert clean_prompts(raw, cfg()) == ["一只红色的猫", "a cat", "café au lait, 4k"]
    assert clean_prompts(raw, cfg(ascii_only=True)) == ["a cat", "café au lait, 4k"]  # 1 of 11 letters non-ASCII
    assert clean_prompts(raw, cfg(ascii_only=True, min_ascii_share=1.0)) == ["a cat"]
    assert clean_prompts(raw, cfg(dedupe=False)) == raw


def test_config_validation_messages():
    with pytest.raises(ValidationError, match="min_chars .* must be <= max_chars"):
        cfg(min_chars=10, max_chars=5)
    with pytest.raises(ValidationError, match="heldout_fraction"):
        cfg(heldout_fraction=1.0)
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        cfg(heldout_frac=0.2)


# ---------------------------------------------------------------------------------- splitting

def many(n: int) -> list[str]:
    return [f"prompt number {i}" for i in range(n)]


def test_split_is_deterministic_and_partitions():
    prompts = many(200)
    a, b = split_prompts(prompts, cfg(seed=3)), split_prompts(prompts, cfg(seed=3))
    assert a == b
    assert sorted(a.train + a.heldout) == sorted(prompts)
    assert 5 <= len(a.heldout) <= 40  # about 10 %
    assert a.train == [p for p in prompts if p in set(a.train)]  # input order kept
    assert split_prompts(prompts, cfg(seed=4)).heldout != a.heldout


def test_adding_prompts_does_not_move_existing_ones():
    before = split_prompts(many(100), cfg())
    after = split_prompts(many(100) + [f"new prompt {i}" for i in range(50)], cfg())
    assert set(before.heldout) <= set(after.heldout)
    assert set(before.train) <= set(after.train)


def test_small_sets_get_one_heldout_and_keep_train_nonempty():
    for n in (1, 2, 3):
        split = split_prompts(many(n), cfg(heldout_fraction=0.01))
        assert len(split.train) >= 1
        assert len(split.heldout) == (1 if n >= 2 else 0)
    split = split_prompts(many(2), cfg(heldout_fraction=0.99))
    assert len(split.train) == 1 and len(split.heldout) == 1
    assert split_prompts(many(5), cfg(heldout_fraction=0.0)).heldout == []


def test_caps():
    prompts = many(300)
    full = split_prompts(prompts, cfg(heldout_fraction=0.5))
    capped = split_prompts(prompts, cfg(heldout_fraction=0.5, max_heldout=10, max_train=20))
    assert len(capped.heldout) == 10 and len(capped.train) == 20
    assert set(capped.heldout) <= set(full.heldout)  # capped held-out prompts never move to train
    assert set(capped.train) <= set(full.train)


# ------------------------------------------------------------------------------------- errors

def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        prepare_prompts(PromptConfig(source=str(missing)))


@pytest.mark.parametrize("name,content", [("e.txt", ""), ("blank.txt", "\n  \n\t\n"), ("e.json", ""),
                                          ("l.json", "[]"), ("e.csv", ""), ("h.csv", "prompt\n")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=r"is empty"):
        prepare_prompts(PromptConfig(source=str(path)))


def test_everything_filtered_reports_counts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("ab\nxy\n\n" + "z" * 40 + "\n")
    with pytest.raises(ValueError, match=r"all 4 prompts .* filtered out .*1 empty, 2 shorter than min_chars=3, "
                                         r"1 longer than max_chars=30"):
        prepare_prompts(PromptConfig(source=str(path), max_chars=30))


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('["a cat", "a dog",\n  oops]')
    with pytest.raises(ValueError, match=r"bad\.json.*not valid JSON \(line 2"):
        prepare_prompts(PromptConfig(source=str(path)))


def test_malformed_json_shapes(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text('{"items": ["a cat"]}')
    with pytest.raises(ValueError, match=r"without a 'prompts' key"):
        load_prompts(str(path))
    path.write_text('["a cat", 3]')
    with pytest.raises(ValueError, match=r"prompt 1 is a int"):
        load_prompts(str(path))


def test_malformed_csv_names_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt\n"a cat\n')
    with pytest.raises(ValueError, match=r"bad\.csv.*not valid CSV"):
        prepare_prompts(PromptConfig(source=str(path)))


def test_prepare_prompts_end_to_end(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(many(50) + ["prompt number 0", ""]) + "\n")
    split = prepare_prompts(PromptConfig(source=str(path), heldout_fraction=0.2, max_heldout=5))
    assert split.stats is not None and split.stats.duplicates == 1 and split.stats.empty == 1
    assert len(split.heldout) <= 5 and len(split.train) + len(split.heldout) <= 50
    assert not set(split.train) & set(split.heldout)


def test_a_file_that_is_not_utf8_is_named_with_the_fix(tmp_path):
    from srpo.evaluation.benchmarks import load_prompt_list

    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for load in (load_prompts, load_prompt_list):
        with pytest.raises(ValueError, match=r"latin1.txt' is not UTF-8 text .*re-save the file as UTF-8"):
            load(str(path))
