"""Where the bootstrapped world models live, so that configs can name them.

``shapes_bootstrap`` trains the world's generator and reward and stores them as ZenML artifacts;
its last step copies them to a stable folder under the library cache::

    $SRPO_CACHE/world/shapes-flux/   a diffusers FLUX pipeline folder
    $SRPO_CACHE/world/shapes-clip/   a transformers CLIPModel folder (the hf_clip reward layout)
    $SRPO_CACHE/world/PUBLISHED.json which artifact versions they came from, and their hashes

and the library resolves ``policy.pretrained: builtin:shapes-flux`` and
``reward.checkpoint: builtin:shapes-clip`` there. :func:`published_fingerprint` hashes the
published files; pipelines that use the world put it in their cache key (run-config
``cache_policy.cache_func``), so a re-bootstrapped world never reuses results of the old one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from srpo.io import atomic_directory, atomic_write_text, cache_dir

#: Published world models: name -> what kind of folder it is.
WORLD_MODELS = {"shapes-flux": "diffusers FLUX pipeline", "shapes-clip": "transformers CLIPModel (hf_clip)",
                "shapes-clip-biased": "transformers CLIPModel (hf_clip) with a planted saturation bias"}
RECORD = "PUBLISHED.json"
BOOTSTRAP_COMMAND = ("zenml pipeline run pipelines.bootstrap.shapes_bootstrap --config configs/shapes_bootstrap.yaml"
                     " (or: make demo)")


def world_dir() -> Path:
    return cache_dir() / "world"


def published_path(name: str) -> Path:
    """The published folder of world model ``name``; raises with the command to create it if missing."""
    if name not in WORLD_MODELS:
        raise ValueError(f"unknown world model {name!r}: known are {sorted(WORLD_MODELS)}")
    path = world_dir() / name
    if not path.is_dir():
        raise FileNotFoundError(f"the shapes world's {name!r} ({WORLD_MODELS[name]}) is not published under "
                                f"{world_dir()}: run the bootstrap first: {BOOTSTRAP_COMMAND}. It trains the "
                                "generator and the reward (about 3 minutes on 2 quiet CPU cores) and publishes them "
                                "there ($SRPO_CACHE sets the cache root).")
    return path


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file's relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def publish(name: str, source: str | Path, provenance: dict | None = None) -> Path:
    """Copy folder ``source`` to the published location of ``name`` (atomically replacing it)."""
    if name not in WORLD_MODELS:
        raise ValueError(f"unknown world model {name!r}: known are {sorted(WORLD_MODELS)}")
    source, target = Path(source), world_dir() / name
    with atomic_directory(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    record = read_record()
    record[name] = {"sha256": folder_digest(target), **(provenance or {})}
    atomic_write_text(world_dir() / RECORD, json.dumps(record, indent=2, sort_keys=True))
    return target


def read_record() -> dict:
    path = world_dir() / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def published_fingerprint() -> str:
    """A string that changes whenever a published world model changes (``"unpublished"`` if none).

    Used as ZenML's ``cache_policy.cache_func`` by the configs that run on the world.
    """
    record = read_record()
    parts = [f"{name}={record[name]['sha256']}" for name in sorted(record)
             if name in WORLD_MODELS and (world_dir() / name).is_dir()]
    return ";".join(parts) or "unpublished"
