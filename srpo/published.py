"""The one list of built-in model names (``builtin:<name>``) that policies, rewards and metrics resolve.

A config names a built-in model instead of a path: ``policy.pretrained: builtin:tiny-flux``,
``reward.checkpoint: builtin:tiny``, ``metrics[].checkpoint: builtin:tiny``. Each name belongs to
one *kind* (``policy``, ``reward``, ``metric``) and resolves to a local folder, either

- built on first use into ``$SRPO_CACHE/builtin/`` by a builder function of the family that
  loads it (a tiny random model of that family, seeded), or
- published by the shapes world's bootstrap (its trained generator and rewards)::

    $SRPO_CACHE/world/shapes-flux/   a diffusers FLUX pipeline folder
    $SRPO_CACHE/world/shapes-clip/   a transformers CLIPModel folder (the hf_clip reward layout)
    $SRPO_CACHE/world/shapes-kontext/ a diffusers FLUX.1 Kontext folder (the edit model; srpo.world.edit_generator)
    $SRPO_CACHE/world/PUBLISHED.json which artifact versions they came from, and their hashes

Names are declared here, so that configs (validated below the families) know them; the builder is
provided by the family module that owns it, when that module is imported (:func:`provide_builder`),
so this module names no code above it. Adding one is a declaration here and one call in the family::

    register_builtin("policy", "tiny-sd3", None, "a tiny random SD3 pipeline")   # here
    provide_builder("policy", "tiny-sd3", tiny_sd3_folder)                        # in srpo/models/tiny_families.py

The modules that resolve a kind import its providers first (same layer or below): policies
:mod:`srpo.models.families`, rewards the reward loaders (:mod:`srpo.rewards`), metrics
:mod:`srpo.evaluation.metrics`. A builder is called as ``builder(family=..., seed=...)`` and returns
the folder (``family`` is the reward or metric name for ``builtin:tiny``, ``None`` for policies).

:func:`published_fingerprint` hashes the published files; pipelines that use the world put it in
their cache key (run-config ``cache_policy.cache_func``), so a re-bootstrapped world never
reuses results of the old one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from srpo.io import atomic_directory, atomic_write_text, cache_dir

BUILTIN_PREFIX = "builtin:"
#: The tiny random pipelines of the other families (built by srpo/models/tiny_families.py): name -> model.
TINY_FAMILIES = {"tiny-qwen-image": "Qwen-Image", "tiny-sd3": "Stable Diffusion 3.5", "tiny-flux2": "FLUX.2 [dev]",
                 "tiny-flux2-klein": "FLUX.2 [klein]", "tiny-z-image": "Z-Image",
                 "tiny-flux-kontext": "FLUX.1 Kontext (edits a source image)",
                 "tiny-qwen-image-edit": "Qwen-Image-Edit (edits a source image)",
                 "tiny-qwen-image-edit-plus": "Qwen-Image-Edit-2509 (edits up to three source images)"}
KINDS = ("policy", "reward", "metric")

#: A builder: ``builder(family=..., seed=...) -> folder``.
Builder = Callable[..., Path]


@dataclass
class Builtin:
    """One registered built-in name: its kind, what its folder holds, and how to get the folder
    (``builder``: None until its family module provides it)."""

    kind: str
    name: str
    description: str
    builder: Builder | None = None

    def folder(self, *, family: str | None = None, seed: int = 0) -> Path:
        if self.builder is None:
            raise RuntimeError(f"built-in {self.kind} {BUILTIN_PREFIX}{self.name} has no builder in this process: "
                               f"the module of its family provides it when imported; import the {self.kind} "
                               "package (srpo.models.families, srpo.rewards or srpo.evaluation.metrics) first")
        return Path(self.builder(family=family, seed=seed))


_REGISTRY: dict[tuple[str, str], Builtin] = {}


def register_builtin(kind: str, name: str, builder: Builder | None, description: str) -> Builtin:
    """Make ``builtin:<name>`` known to configs of ``kind`` (``policy``, ``reward`` or ``metric``);
    ``builder`` None: its family provides it (:func:`provide_builder`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown built-in kind {kind!r}: choose one of {', '.join(KINDS)}")
    if (kind, name) in _REGISTRY:
        raise ValueError(f"built-in {kind} {name!r} is registered twice")
    entry = _REGISTRY[(kind, name)] = Builtin(kind, name, description, builder)
    return entry


def provide_builder(kind: str, name: str, builder: Builder) -> None:
    """Attach the builder of a declared ``builtin:<name>`` (called by the family module that owns it)."""
    entry = lookup_builtin(kind, name)
    if entry.builder is not None and entry.builder is not builder:
        raise ValueError(f"built-in {kind} {name!r} already has a builder")
    entry.builder = builder


def is_builtin(location: str | None) -> bool:
    """True for locations spelled ``builtin:<name>``."""
    return isinstance(location, str) and location.startswith(BUILTIN_PREFIX)


def builtin_names(kind: str) -> list[str]:
    """The ``builtin:<name>`` locations known for ``kind``, sorted."""
    return sorted(BUILTIN_PREFIX + name for k, name in _REGISTRY if k == kind)


def lookup_builtin(kind: str, location: str) -> Builtin:
    """The registered entry of ``location`` (``builtin:<name>``) for ``kind``; unknown: a ``ValueError``
    that lists the names known for that kind."""
    name = location[len(BUILTIN_PREFIX):] if is_builtin(location) else location
    entry = _REGISTRY.get((kind, name))
    if entry is None:
        raise ValueError(f"unknown built-in {kind} {location!r}: known are {', '.join(builtin_names(kind))}")
    return entry


def resolve_builtin(kind: str, location: str, *, family: str | None = None, seed: int = 0) -> Path:
    """The local folder of ``location`` (``builtin:<name>``) for ``kind``, built or published."""
    return lookup_builtin(kind, location).folder(family=family, seed=seed)


# -- the shapes world's published models ------------------------------------------------------

#: Published world models: name -> what kind of folder it is (filled by :func:`_register_world_model`).
WORLD_MODELS: dict[str, str] = {}
RECORD = "PUBLISHED.json"
EDIT_BOOTSTRAP = "shapes_bootstrap_edit.yaml"  # the bootstrap config that also publishes shapes-kontext
BOOTSTRAP_COMMAND = ("zenml pipeline run pipelines.bootstrap.shapes_bootstrap --config configs/shapes_bootstrap.yaml"
                     " (or: make demo)")


def _register_world_model(kind: str, name: str, description: str) -> None:
    WORLD_MODELS[name] = description
    register_builtin(kind, name, lambda family=None, seed=0: published_path(name), description)


def world_dir() -> Path:
    return cache_dir() / "world"


def published_path(name: str) -> Path:
    """The published folder of world model ``name``; raises with the command to create it if missing."""
    if name not in WORLD_MODELS:
        raise ValueError(f"unknown world model {name!r}: known are {sorted(WORLD_MODELS)}")
    path = world_dir() / name
    if not path.is_dir() and name == "shapes-kontext":
        raise FileNotFoundError(f"the shapes world's {name!r} ({WORLD_MODELS[name]}) is not published under "
                                f"{world_dir()}: run the bootstrap with its edit model first: "
                                f"{BOOTSTRAP_COMMAND.split(' (')[0].replace('shapes_bootstrap.yaml', EDIT_BOOTSTRAP)} "
                                "(the world's other steps come from the cache; the edit model trains in ~2 minutes)")
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


# -- the registry ---------------------------------------------------------------------------

# builders: srpo/models/tiny.py and tiny_families.py, srpo/rewards/__init__.py, srpo/evaluation/metrics/__init__.py
register_builtin("policy", "tiny-flux", None, "a tiny random FLUX pipeline (diffusers folder), for tests and the CPU demo")
for _name, _what in TINY_FAMILIES.items():
    register_builtin("policy", _name, None, f"a tiny random {_what} pipeline (diffusers folder), for tests")
register_builtin("reward", "tiny", None, "a tiny random model of the reward's family (open_clip or transformers CLIP)")
register_builtin("metric", "tiny", None, "a tiny random model of the metric's architecture (imagereward, aesthetic_v2.5)")
_register_world_model("policy", "shapes-flux", "diffusers FLUX pipeline")
_register_world_model("policy", "shapes-kontext", "diffusers FluxKontextPipeline: the world's edit model")
_register_world_model("reward", "shapes-clip", "transformers CLIPModel (hf_clip)")
_register_world_model("reward", "shapes-clip-biased", "transformers CLIPModel (hf_clip) with a planted saturation bias")
