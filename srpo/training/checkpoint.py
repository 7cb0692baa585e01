"""Training checkpoints that survive SIGKILL: written aside, checksummed, renamed into place.

A checkpoint is a folder ``step-000012/`` holding

- ``trainable.safetensors``: the parameters being trained (all of them, or only LoRA's);
- ``optimizer.pt``: the optimizer state (tensors and numbers only: loaded with weights_only);
- ``rng-rank{r}.pt``: every rank's torch RNG state;
- ``trainer_state.json``: step, data position, history, fault counters;
- ``manifest.json``: size and SHA-256 of every file above, written last.

It is built in ``.tmp-step-000012-*`` and renamed, so a folder named ``step-*`` is complete unless
its files were damaged afterwards; :func:`latest_valid` checks the manifest and skips (with a
warning) anything that does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from srpo.io import atomic_directory

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
PREFIX = "step-"


class CorruptCheckpoint(RuntimeError):
    """A checkpoint folder whose files do not match its manifest."""


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def write_checkpoint(root: Path, step: int, files: dict[str, Any], keep: int) -> Path:
    """Write ``files`` (name -> writer(path)) as checkpoint ``step`` under ``root``; keep the last ``keep``."""
    final = root / checkpoint_name(step)
    with atomic_directory(final) as tmp:
        for name, write in files.items():
            write(tmp / name)
        manifest = {name: {"size": (tmp / name).stat().st_size, "sha256": sha256(tmp / name)} for name in files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints, and leftovers of interrupted writes."""
    for leftover in root.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def verify(folder: Path) -> dict:
    """Check every file against the manifest; returns the trainer state. Raises CorruptCheckpoint."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptCheckpoint(f"{folder}: no readable {MANIFEST} ({err})") from err
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{folder}: {name} is missing")
        if path.stat().st_size != expected["size"] or sha256(path) != expected["sha256"]:
            raise CorruptCheckpoint(f"{folder}: {name} does not match its checksum (damaged or partial)")
    return read_state(folder)


def read_state(folder: Path) -> dict:
    """The trainer state of a checkpoint (no checksums: for processes that resume where another verified)."""
    try:
        return json.loads((folder / STATE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptCheckpoint(f"{folder}: unreadable {STATE} ({err})") from err


def latest_valid(root: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint under ``root`` that passes :func:`verify`; corrupt ones are skipped loudly."""
    if not root.exists():
        return None
    for folder in sorted(root.glob(f"{PREFIX}*"), reverse=True):
        try:
            return folder, verify(folder)
        except CorruptCheckpoint as err:
            log.warning("skipping checkpoint: %s", err)
    return None


def save_tensors(tensors: dict[str, torch.Tensor]):
    from safetensors.torch import save_file

    return lambda path: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def save_torch(obj):
    return lambda path: torch.save(obj, path)


def save_json(obj):
    return lambda path: path.write_text(json.dumps(obj, indent=1))


def load_torch(path: Path):
    """Our own optimizer / RNG files: tensors and plain containers only (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)
