"""Edit data: (source image, instruction) pairs from a folder or ``s3://`` prefix, checked before any model loads.

The layout is the Hugging Face imagefolder one with an instruction per image::

    edits/
      metadata.jsonl     {"file_name": "cat.png", "instruction": "make the cat black"}
                         {"file_name": "dog.png", "instruction": "add a hat", "target": "dog_hat.png"}
      cat.png  dog.png  dog_hat.png

Optional ``target_text`` (what the edited image shows) and ``source_text`` (the source's caption) are what an
edit reward's text and direction terms compare with (:func:`srpo.world.edits.write_edit_folder` writes both).

Online training (the policy edits the source) needs ``file_name`` and ``instruction``; offline
training also needs ``target``, the edited image to encode as x0 (:attr:`EditDataConfig.require_target`).
:func:`load_edit_pairs` reads every line and every image it names and refuses the set, with every bad
line named (``metadata.jsonl:7: ...``), when any line is not a JSON object, lacks a field, has an
empty instruction, or names an image that is missing or that PIL cannot decode. A remote prefix is
mirrored into the cache first (:func:`srpo.io.resolve_local`, as the prompt files and offline image
folders are). :func:`prepare_edits` then splits the pairs into train and held-out with the prompt
split's rule (:func:`srpo.prompts.split_prompts`: a pair's side depends on its own file and
instruction and the seed only).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from srpo.config import StrictModel
from srpo.io import resolve_local
from srpo.prompts import PromptConfig, normalize_prompt, read_utf8_text, split_prompts, text_lines

logger = logging.getLogger(__name__)

METADATA = "metadata.jsonl"
MAX_LISTED = 20  # bad lines listed in one error (the count is always given)


class EditPair(BaseModel):
    """One edit: the source image, the instruction, and (offline) the target image; paths relative to the folder."""

    model_config = ConfigDict(frozen=True)

    source: str  # the file_name field
    instruction: str  # whitespace-normalised, never empty
    target: str | None = None
    target_text: str | None = None  # what the edited image shows (an edit reward's text terms compare with it)
    source_text: str | None = None  # the source image's caption (an ``against: direction`` term reads it)
    line: int  # 1-based line of metadata.jsonl (for messages)

    @property
    def key(self) -> str:
        """What the train / held-out split hashes: the source file and the instruction."""
        return f"{self.source}\x00{self.instruction}"


class EditDataConfig(StrictModel):
    """Where the edit pairs come from and how they are split (the split fields are :class:`PromptConfig`'s)."""

    source: str = Field(min_length=1, description="folder or fsspec prefix (s3://bucket/edits) holding metadata.jsonl "
                                                  "and the images")
    require_target: bool = Field(False, description="offline training: every line must name a target image")
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_heldout: int | None = Field(None, ge=0)
    max_train: int | None = Field(None, ge=1)
    seed: int = 0


class EditSplit(BaseModel):
    """Train and held-out edit pairs, in file order, and the folder their paths are relative to."""

    model_config = ConfigDict(frozen=True)

    root: str
    train: list[EditPair]
    heldout: list[EditPair]


def _image_problem(root: Path, name: str) -> str | None:
    """Why ``name`` (relative to ``root``) is not a usable image, or None."""
    from PIL import Image, UnidentifiedImageError

    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        return f"image path {name!r} must be relative to the folder, without '..'"
    path = root / relative
    if not path.is_file():
        return f"image {name!r} not found in the folder"
    try:
        with Image.open(path) as im:
            im.load()  # the whole decode: a truncated file fails here, not in the rollout step
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"image {name!r} cannot be read ({type(err).__name__}: {err})"
    return None


def _line_problems(root: Path, n: int, line: str, require_target: bool) -> tuple[EditPair | None, list[str]]:
    """The pair on line ``n`` or what is wrong with it (every problem of the line)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, [f"not valid JSON ({err.msg} at column {err.colno})"]
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    for field in ("file_name", "instruction") + (("target",) if require_target else ()):
        if field not in record or record[field] is None:
            problems.append(f"no {field!r} field" + (" (offline training needs the edited image)"
                                                      if field == "target" else ""))
        elif not isinstance(record[field], str):
            problems.append(f"{field!r} must be a string, got {type(record[field]).__name__}")
    if problems:
        return None, problems
    instruction = normalize_prompt(record["instruction"])
    if not instruction:
        problems.append("empty instruction")
    for field in ("file_name", "target"):
        if isinstance(record.get(field), str):
            problem = _image_problem(root, record[field])
            if problem:
                problems.append(f"{field}: {problem}")
        elif record.get(field) is not None:
            problems.append(f"{field!r} must be a string, got {type(record[field]).__name__}")
    texts = {}
    for field in ("target_text", "source_text"):  # optional captions
        value = record.get(field)
        if value is not None and not (isinstance(value, str) and normalize_prompt(value)):
            problems.append(f"{field!r} must be a non-empty string when given, got {value!r}")
        elif value is not None:
            texts[field] = normalize_prompt(value)
    if problems:
        return None, problems
    return EditPair(source=record["file_name"], instruction=instruction, target=record.get("target"), line=n,
                    **texts), []


def load_edit_pairs(source: str, require_target: bool = False) -> tuple[Path, list[EditPair]]:
    """The folder and every pair of its ``metadata.jsonl``, in file order; all of it checked (see the module doc).

    Blank lines are skipped; a later line with the same source and instruction is dropped (logged).

    Raises:
        FileNotFoundError: the folder or its metadata.jsonl does not exist.
        ValueError: bad lines (each named with its problem), or no pair at all.
    """
    root = resolve_local(source)
    if not root.is_dir():
        raise ValueError(f"edit data source {source!r} is a file: give the folder (or s3:// prefix) that holds "
                         f"{METADATA} and the images")
    meta = root / METADATA
    if not meta.is_file():
        raise FileNotFoundError(f"edit data source {source!r} has no {METADATA}: add one line per edit, "
                                '{"file_name": "src.png", "instruction": "make the sky red"} (offline: a "target" too)')
    pairs, bad, seen, duplicates = [], [], set(), 0
    for n, line in enumerate(text_lines(read_utf8_text(meta, str(meta))), 1):
        if not line.strip():
            continue
        pair, problems = _line_problems(root, n, line, require_target)
        bad += [f"{METADATA}:{n}: {p}" for p in problems]
        if pair is not None:
            if pair.key in seen:
                duplicates += 1
                continue
            seen.add(pair.key)
            pairs.append(pair)
    if bad:
        listed = "\n".join(f"  {b}" for b in bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise ValueError(f"edit data source {source!r}: {len(bad)} problem(s) in {METADATA} (listed below): fix or "
                         f"remove those lines\n{listed}{more}")
    if not pairs:
        raise ValueError(f"edit data source {source!r}: {METADATA} lists no edit: add one line per edit, "
                         '{"file_name": ..., "instruction": ...}')
    if duplicates:
        logger.info("%s: %d repeated (file_name, instruction) lines dropped", meta, duplicates)
    return root, pairs


def prepare_edits(cfg: EditDataConfig) -> EditSplit:
    """Load and check ``cfg.source``'s pairs and split them into train and held-out (the prompt split's rule)."""
    root, pairs = load_edit_pairs(cfg.source, cfg.require_target)
    by_key = {p.key: p for p in pairs}
    rule = PromptConfig(source=cfg.source, heldout_fraction=cfg.heldout_fraction, max_heldout=cfg.max_heldout,
                        max_train=cfg.max_train, seed=cfg.seed)
    split = split_prompts(list(by_key), rule)
    logger.info("edits from %s: %d pairs; %d train, %d held out", cfg.source, len(pairs), len(split.train),
                len(split.heldout))
    return EditSplit(root=str(root), train=[by_key[k] for k in split.train], heldout=[by_key[k] for k in split.heldout])
