"""Prompt preparation: load a prompt file, clean it, split it into train and held-out prompts.

The three stages are separate functions so that each can be tested and reused on its own:

    load_prompts(source)        -> raw prompts, in file order (txt / json / csv, local or fsspec URL)
    clean_prompts(prompts, cfg) -> normalised, filtered, de-duplicated prompts, in first-seen order
    split_prompts(prompts, cfg) -> PromptSplit(train, heldout), deterministic given (prompts, seed)

:func:`prepare_prompts` chains them from one :class:`PromptConfig` and turns the usual mistakes
(missing file, empty file, everything filtered out, malformed JSON/CSV) into errors that name the
file and say what to change.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srpo.config import StrictModel
from srpo.io import resolve_local

logger = logging.getLogger(__name__)

PromptFormat = Literal["auto", "txt", "json", "csv"]

#: File suffix -> format, for ``format="auto"``.
SUFFIX_FORMATS: dict[str, str] = {".txt": "txt", ".json": "json", ".csv": "csv"}

_WHITESPACE = re.compile(r"\s+")


class PromptConfig(StrictModel):
    """Where the prompts come from and how they are cleaned and split.

    Cleaning (in this order; a prompt is counted against the first filter that drops it):
    surrounding whitespace is stripped and internal runs of whitespace collapse to one space;
    empty prompts are dropped; prompts shorter than ``min_chars`` or longer than ``max_chars``
    (counted after normalisation) are dropped; with ``ascii_only`` the *language filter* drops
    prompts in which fewer than ``min_ascii_share`` of the letters are ASCII letters (a cheap
    "English-like script" test: ``"a cat, 4k"`` passes, ``"一只猫"`` and ``"кошка"`` do not;
    prompts without any letter pass); with ``dedupe`` later copies of a prompt are dropped,
    ignoring case and whitespace.

    Splitting: each prompt is held out when a hash of ``(seed, prompt)`` falls below
    ``heldout_fraction``, so a prompt's side never changes when other prompts are added or
    removed. ``max_heldout`` / ``max_train`` then cap each side (see :func:`split_prompts`).
    """

    source: str = Field(min_length=1, description="Local path or fsspec URL (s3://bucket/prompts.txt).")
    format: PromptFormat = Field("auto", description="'auto' picks the format from the file suffix.")
    column: str = Field("prompt", min_length=1, description="CSV column, or JSON key when records are objects.")
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(500, ge=1)
    ascii_only: bool = False
    min_ascii_share: float = Field(0.9, ge=0.0, le=1.0)
    dedupe: bool = True
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_heldout: int | None = Field(None, ge=0)
    max_train: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check_lengths(self) -> PromptConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be <= max_chars ({self.max_chars}): "
                             "lower min_chars or raise max_chars")
        return self


class CleaningStats(BaseModel):
    """How many prompts each cleaning filter dropped (each prompt counts against one filter)."""

    model_config = ConfigDict(frozen=True)

    total: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    non_ascii: int = 0
    duplicates: int = 0
    kept: int = 0

    def describe(self, cfg: PromptConfig) -> str:
        """One line such as ``'2 empty, 5 shorter than min_chars=3, 0 duplicates'``."""
        parts = [f"{self.empty} empty",
                 f"{self.too_short} shorter than min_chars={cfg.min_chars}",
                 f"{self.too_long} longer than max_chars={cfg.max_chars}"]
        if cfg.ascii_only:
            parts.append(f"{self.non_ascii} below min_ascii_share={cfg.min_ascii_share} (ascii_only)")
        if cfg.dedupe:
            parts.append(f"{self.duplicates} duplicates")
        return ", ".join(parts)


class PromptSplit(BaseModel):
    """Train and held-out prompts, each in input order, plus the cleaning counts when known."""

    model_config = ConfigDict(frozen=True)

    train: list[str]
    heldout: list[str]
    stats: CleaningStats | None = None


# ----------------------------------------------------------------------------------- loading

def load_prompts(source: str, format: PromptFormat = "auto", column: str = "prompt") -> list[str]:
    """Read the raw prompts of ``source`` (a local path or fsspec URL), in file order.

    - ``txt``: one prompt per line.
    - ``json``: a list of strings, a list of objects holding the ``column`` key, or an object
      ``{"prompts": [...]}`` whose list is either of those.
    - ``csv``: the ``column`` column (the first row is the header).

    ``format="auto"`` picks the format from the suffix (.txt, .json, .csv). Files are read as
    UTF-8 (a leading byte-order mark is ignored). Nothing is cleaned here: see
    :func:`clean_prompts`.

    Raises:
        FileNotFoundError: ``source`` does not exist (the message names it).
        ValueError: unknown suffix, not UTF-8, malformed JSON/CSV, or a missing column/key.
    """
    path = resolve_local(source)
    if path.is_dir():
        raise ValueError(f"{source!r} is a directory: give the path of a prompt file (.txt, .json or .csv)")
    fmt = _detect_format(source, path) if format == "auto" else format
    text = read_utf8_text(path, source)
    if fmt == "txt":
        return text_lines(text)
    if fmt == "json":
        return _parse_json(text, source, column)
    if fmt == "csv":
        return _parse_csv(text, source, column)
    raise ValueError(f"unknown prompt format {fmt!r}: use 'auto', 'txt', 'json' or 'csv'")


def read_utf8_text(path: Path, source: str) -> str:
    """The text of ``path`` (UTF-8, a byte-order mark dropped); ``source`` names it in the error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source!r} is not UTF-8 text ({e.reason} at byte {e.start}): "
                         "re-save the file as UTF-8") from e


def text_lines(text: str) -> list[str]:
    """The lines of a text file: ended by \\n, \\r\\n or \\r only (``str.splitlines`` also splits at
    U+2028, form feeds and other characters a prompt may contain)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _detect_format(source: str, path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise ValueError(f"cannot tell the format of {source!r} from its suffix {suffix!r}: "
                         f"use one of {sorted(SUFFIX_FORMATS)} or set format to 'txt', 'json' or 'csv'")
    return SUFFIX_FORMATS[suffix]


def _parse_json(text: str, source: str, column: str) -> list[str]:
    if not text.strip():
        return []  # an empty file: reported as "empty" by prepare_prompts, not as malformed
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source!r} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): "
                         "fix the file, or use format 'txt' for one prompt per line") from e
    if isinstance(data, dict):
        if "prompts" not in data:
            raise ValueError(f"{source!r} holds a JSON object without a 'prompts' key (keys: {sorted(data)}): "
                             'use a list, or {"prompts": [...]}')
        data = data["prompts"]
    if not isinstance(data, list):
        raise ValueError(f"{source!r}: expected a JSON list of prompts, got {type(data).__name__}")
    prompts: list[str] = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            if column not in item:
                raise ValueError(f"{source!r}: record {i} has no key {column!r} (its keys: {sorted(item)}): "
                                 "set column to the key that holds the prompt")
            item = item[column]
        if item is None:
            item = ""
        if not isinstance(item, str):
            raise ValueError(f"{source!r}: prompt {i} is a {type(item).__name__} ({item!r}), not a string")
        prompts.append(item)
    return prompts


def _parse_csv(text: str, source: str, column: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        fields = reader.fieldnames
        if fields is None:
            return []  # an empty file
        if column not in fields:
            raise ValueError(f"{source!r} has no column {column!r}; its columns are {list(fields)}: "
                             "set column to one of them")
        return [row[column] or "" for row in reader]
    except csv.Error as e:
        raise ValueError(f"{source!r} is not valid CSV (line {reader.line_num}: {e}): "
                         "fix the quoting, or use format 'txt' for one prompt per line") from e


# ---------------------------------------------------------------------------------- cleaning

def normalize_prompt(prompt: str) -> str:
    """Strip and collapse every run of whitespace (tabs, newlines, ...) to one space."""
    return _WHITESPACE.sub(" ", prompt).strip()


def ascii_letter_share(prompt: str) -> float:
    """Share of ASCII letters among the letters of ``prompt`` (1.0 when it has no letters)."""
    letters = [c for c in prompt if c.isalpha()]
    if not letters:
        return 1.0
    return sum(c.isascii() for c in letters) / len(letters)


def clean_prompts_with_stats(prompts: list[str], cfg: PromptConfig) -> tuple[list[str], CleaningStats]:
    """:func:`clean_prompts`, also returning how many prompts each filter dropped."""
    counts = dict(total=len(prompts), empty=0, too_short=0, too_long=0, non_ascii=0, duplicates=0)
    seen: set[str] = set()
    kept: list[str] = []
    for raw in prompts:
        prompt = normalize_prompt(raw)
        if not prompt:
            counts["empty"] += 1
        elif len(prompt) < cfg.min_chars:
            counts["too_short"] += 1
        elif len(prompt) > cfg.max_chars:
            counts["too_long"] += 1
        elif cfg.ascii_only and ascii_letter_share(prompt) < cfg.min_ascii_share:
            counts["non_ascii"] += 1
        elif cfg.dedupe and (key := prompt.casefold()) in seen:
            counts["duplicates"] += 1
        else:
            if cfg.dedupe:
                seen.add(key)
            kept.append(prompt)
    return kept, CleaningStats(**counts, kept=len(kept))


def clean_prompts(prompts: list[str], cfg: PromptConfig) -> list[str]:
    """Normalise whitespace, drop empty / too short / too long / non-ASCII (with ``ascii_only``)
    prompts and later duplicates (with ``dedupe``), keeping first-occurrence order."""
    return clean_prompts_with_stats(prompts, cfg)[0]


# --------------------------------------------------------------------------------- splitting

def heldout_score(prompt: str, seed: int) -> float:
    """A uniform-looking number in [0, 1) that depends only on ``(seed, prompt)``."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_prompts(prompts: list[str], cfg: PromptConfig, stats: CleaningStats | None = None) -> PromptSplit:
    """Split cleaned prompts into train and held-out sets.

    A prompt is held out when ``heldout_score(prompt, cfg.seed) < cfg.heldout_fraction``: its
    side depends on its own text and the seed only, so adding or removing other prompts never
    moves it. Two corrections keep small sets usable: with ``heldout_fraction > 0`` and at least
    two prompts, the lowest-scoring prompt is held out if none was; and the highest-scoring
    held-out prompt goes to train if train would otherwise be empty.

    The caps then keep the ``max_heldout`` / ``max_train`` prompts with the lowest scores (a
    pseudo-random subset, so a file sorted by category still yields every category). Held-out
    prompts beyond ``max_heldout`` are dropped, not moved to train, so that raising the cap
    later never turns a prompt that was trained on into an evaluation prompt. Both lists keep
    the input order.
    """
    scores = [heldout_score(p, cfg.seed) for p in prompts]
    held = [s < cfg.heldout_fraction for s in scores]
    if cfg.heldout_fraction > 0 and len(prompts) >= 2 and not any(held):
        held[min(range(len(prompts)), key=scores.__getitem__)] = True
    if prompts and all(held):
        held[max(range(len(prompts)), key=scores.__getitem__)] = False

    train_idx = [i for i, h in enumerate(held) if not h]
    heldout_idx = [i for i, h in enumerate(held) if h]
    train_idx = _cap(train_idx, scores, cfg.max_train)
    heldout_idx = _cap(heldout_idx, scores, cfg.max_heldout)
    return PromptSplit(train=[prompts[i] for i in train_idx],
                       heldout=[prompts[i] for i in heldout_idx], stats=stats)


def _cap(indices: list[int], scores: list[float], cap: int | None) -> list[int]:
    """The ``cap`` indices with the lowest scores, back in input order."""
    if cap is None or len(indices) <= cap:
        return indices
    return sorted(sorted(indices, key=scores.__getitem__)[:cap])


# ------------------------------------------------------------------------------------- chain

def prepare_prompts(cfg: PromptConfig) -> PromptSplit:
    """Load, clean and split ``cfg.source``.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is malformed, holds no prompts, or every prompt was filtered out
            (the message gives the count per filter and the settings to relax).
    """
    raw = load_prompts(cfg.source, cfg.format, cfg.column)
    prompts, stats = clean_prompts_with_stats(raw, cfg)
    if not prompts:
        if stats.total == stats.empty:
            raise ValueError(f"{cfg.source!r} is empty: it holds no prompts (format {cfg.format!r}, "
                             f"column {cfg.column!r}). Put one prompt per line (.txt), a JSON list, or a CSV "
                             "with a header row, and check that the source points at the right file")
        raise ValueError(f"all {stats.total} prompts in {cfg.source!r} were filtered out "
                         f"({stats.describe(cfg)}): relax min_chars/max_chars"
                         + (", turn off ascii_only or lower min_ascii_share" if cfg.ascii_only else "")
                         + ", or fix the file")
    split = split_prompts(prompts, cfg, stats)
    logger.info("prompts from %s: %d read, %d kept (%s); %d train, %d held out",
                cfg.source, stats.total, stats.kept, stats.describe(cfg), len(split.train), len(split.heldout))
    return split
