"""Word frequencies of a prompt set: counts, control phrases, the table and the plot."""

from __future__ import annotations

import pytest

from srpo.evaluation.config import PromptAnalysisConfig
from srpo.evaluation.prompt_analysis import word_frequencies, write_prompt_report

PROMPTS = ["An oil painting of a cat", "a painting of a dog, concept art", "Concept-art of a city at night",
           "a photo with natural lighting <script>alert(1)</script>"]


def test_counts_and_control_phrases():
    freq = word_frequencies(PROMPTS, PromptAnalysisConfig(control_words=["Painting", "Concept art",
                                                                          "Natural-lighting", "Cyberpunk"]))
    top = {r["word"]: r for r in freq["top"]}
    assert top["painting"]["count"] == 2 and top["painting"]["prompts"] == 2 and top["painting"]["share"] == 0.5
    assert "of" not in top and "a" not in top  # function words and short words are left out
    control = {r["word"]: r for r in freq["control"]}
    assert control["Concept art"]["count"] == 2  # "concept art" and "Concept-art"
    assert control["Natural-lighting"]["count"] == 1 and control["Cyberpunk"]["count"] == 0
    assert control["Painting"]["rank"] == top["painting"]["rank"]


def test_report_files_escape_prompt_text(tmp_path):
    report = write_prompt_report(PROMPTS, PromptAnalysisConfig(top_k=10), tmp_path / "r", name="<i>set</i>")
    names = {p.name for p in report.path.iterdir()}
    assert {"index.html", "word_frequency.csv", "word_frequency.svg", "control_words.csv",
            "word_frequency.json"} <= names
    html = report.index.read_text()
    assert "<svg" in html and "<script>" not in html and "<i>set</i>" not in html and "&lt;i&gt;set" in html
    assert report.read_json()["num_prompts"] == 4


def test_style_variants_are_left_out_of_the_word_counts():
    from srpo.evaluation.prompt_analysis import benchmark_prompts

    prompts = ["a cat", "a dog", "a cat, Cyberpunk style", "a dog, Cyberpunk style"]
    categories = ["photo", "photo", "style/Cyberpunk", "style/Cyberpunk"]
    assert benchmark_prompts(prompts, categories) == ["a cat", "a dog"]
    assert benchmark_prompts(prompts) == prompts
    with pytest.raises(ValueError, match="4 prompts but 3 categories"):
        benchmark_prompts(prompts, categories[:3])
