"""Word frequencies of a prompt set (the paper's supplement S3), as a table and a bar chart.

SRP only steers what the reward model can read, and the authors found that control words that
are frequent in the reward's training prompts (``painting``) work best while rare ones
(``Cyberpunk``) work poorly. This report counts, over a prompt set:

- ``count``: occurrences of each word (lower-cased; words are runs of letters, digits, ``'``
  and ``-``; words shorter than ``min_length`` and, by default, English function words are
  left out);
- ``prompts``: how many prompts contain the word, and ``share`` = prompts / all prompts;

for the ``top_k`` words, and the same for each configured control word or phrase (a phrase
such as "concept art" is counted where its words appear consecutively; its hyphens match
spaces, so "Natural-lighting" also finds "natural lighting").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from srpo.evaluation.artifacts import INDEX_HTML, PromptReport
from srpo.evaluation.config import STYLE_CATEGORY_PREFIX, PromptAnalysisConfig
from srpo.evaluation.html import esc, page, table
from srpo.io import atomic_write_text, csv_text

_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
ours out over own same she should so some such than that the their theirs them then there these they this those
through to too under until up very was we were what when where which while who whom why will with you your
""".split())


def benchmark_prompts(prompts: Sequence[str], categories: Sequence[str] | None = None) -> list[str]:
    """The benchmark's own prompts: without the style variants the evaluation appends (``style/<word>``),
    which would count each style word once per variant."""
    if categories is None:
        return list(prompts)
    if len(categories) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(categories)} categories: give one category per prompt")
    return [p for p, c in zip(prompts, categories) if not c.startswith(STYLE_CATEGORY_PREFIX)]


def words_of(prompt: str, min_length: int = 1, stopwords: bool = False) -> list[str]:
    toks = [t.strip("'-") for t in _WORD.findall(prompt.lower())]
    return [t for t in toks if len(t) >= min_length and not (stopwords and t in STOPWORDS)]


def phrase_tokens(phrase: str) -> list[str]:
    return [t for t in re.split(r"[\s\-]+", phrase.lower().strip()) if t]


def count_phrase(prompts_tokens: list[list[str]], phrase: str) -> tuple[int, int]:
    """``(occurrences, prompts containing it)`` of ``phrase`` in tokenised prompts."""
    target = phrase_tokens(phrase)
    n = len(target)
    total = docs = 0
    for toks in prompts_tokens:
        hits = sum(1 for i in range(len(toks) - n + 1) if toks[i:i + n] == target) if n else 0
        total += hits
        docs += hits > 0
    return total, docs


def word_frequencies(prompts: Sequence[str], cfg: PromptAnalysisConfig) -> dict:
    """``{"num_prompts", "top": [...], "control": [...]}`` rows with word, count, prompts, share, rank."""
    n = len(prompts)
    tokenised = [words_of(p, cfg.min_length, cfg.stopwords) for p in prompts]
    counts = Counter(t for toks in tokenised for t in toks)
    docs = Counter(t for toks in tokenised for t in set(toks))
    ranking = {w: i + 1 for i, (w, _) in enumerate(counts.most_common())}
    top = [{"rank": ranking[w], "word": w, "count": c, "prompts": docs[w], "share": docs[w] / n if n else 0.0}
           for w, c in counts.most_common(cfg.top_k)]
    plain = [re.split(r"[\s\-]+", p.lower()) for p in prompts]  # phrases are matched on all words
    plain = [[t for t in (x.strip(".,;:!?()[]\"'") for x in toks) if t] for toks in plain]
    control = []
    for phrase in cfg.control_words:
        total, d = count_phrase(plain, phrase)
        words = phrase_tokens(phrase)
        control.append({"word": phrase, "count": total, "prompts": d, "share": d / n if n else 0.0,
                        "rank": ranking.get(words[0]) if len(words) == 1 else None})
    return {"num_prompts": n, "num_words": sum(counts.values()), "vocabulary": len(counts), "top": top,
            "control": control}


def bar_chart_svg(rows: list[dict], value: str = "count", title: str = "", width: int = 640) -> str:
    """A horizontal bar chart as standalone SVG (labels escaped)."""
    bar, gap, label_w, top = 16, 4, 150, 24
    height = top + len(rows) * (bar + gap) + 10
    vmax = max((r[value] for r in rows), default=0) or 1
    scale = (width - label_w - 60) / vmax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<text x="4" y="15" font-weight="bold">{esc(title)}</text>']
    for i, r in enumerate(rows):
        y = top + i * (bar + gap)
        w = max(1.0, r[value] * scale)
        parts.append(f'<text x="{label_w - 6}" y="{y + bar - 4}" text-anchor="end">{esc(r["word"])}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" fill="#4a78c2"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 4}">{esc(r[value])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_prompt_report(prompts: Sequence[str], cfg: PromptAnalysisConfig, out_dir: Path,
                        name: str = "prompts") -> PromptReport:
    """Write ``word_frequency.{json,csv,svg}``, ``control_words.csv`` and ``index.html`` into ``out_dir``."""
    if not prompts:
        raise ValueError("no prompts to analyse: give a non-empty prompt set")
    freq = word_frequencies(prompts, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["rank", "word", "count", "prompts", "share"]
    svg = bar_chart_svg(freq["top"], title=f"Most frequent words in {name} ({freq['num_prompts']} prompts)")
    atomic_write_text(out_dir / "word_frequency.json", json.dumps({"name": name, **freq}, indent=1, ensure_ascii=False))
    atomic_write_text(out_dir / "word_frequency.csv", csv_text(freq["top"], columns))
    atomic_write_text(out_dir / "control_words.csv", csv_text(freq["control"], columns))
    atomic_write_text(out_dir / "word_frequency.svg", svg)
    body = (f"<p>{freq['num_prompts']} prompts, {freq['num_words']} counted words, vocabulary {freq['vocabulary']}"
            f" (words of at least {cfg.min_length} letters{', without function words' if cfg.stopwords else ''}).</p>"
            + svg + "<h2>Control words</h2>"
            + table(columns, [[r["rank"] if r["rank"] is not None else "-", r["word"], r["count"], r["prompts"],
                               r["share"]] for r in freq["control"]], 3)
            + f"<h2>Top {len(freq['top'])} words</h2>"
            + table(columns, [[r[c] for c in columns] for r in freq["top"]], 3))
    atomic_write_text(out_dir / INDEX_HTML, page(f"Word frequencies: {name}", body))
    return PromptReport(out_dir)
