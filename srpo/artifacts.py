"""Plain data types that pipeline steps pass to each other (no ZenML imports here).

- :class:`ModelFolder`: a directory of model files (a diffusers folder, a LoRA adapter, a
  trainer checkpoint). ZenML stores it file by file (``materializers/model_folder.py``).
- :class:`RolloutSet`: the clean latents and noise priors of a batch of rollouts (or of encoded
  real images in offline mode), which Direct-Align trains on. On disk: ``tensors.safetensors``
  plus ``meta.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srpo.io import atomic_write_text

ROLLOUT_MODES = ("online", "offline")
ROLLOUT_TENSORS = "tensors.safetensors"
ROLLOUT_META = "meta.json"
ROLLOUT_FORMAT_VERSION = 1
COND_PREFIX = "cond."  # stored text conditioning's tensor names in tensors.safetensors


@dataclass
class ModelFolder:
    """A directory of model files; ``kind`` says what it holds ("diffusers", "lora", "checkpoint")."""

    path: Path
    kind: str = "diffusers"

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def files(self) -> list[Path]:
        """Every regular file below ``path`` (symlinks followed), relative to it, sorted.

        Raises:
            NotADirectoryError: ``path`` is missing or is not a directory.
        """
        if not self.path.is_dir():
            raise NotADirectoryError(f"model folder {str(self.path)!r} does not exist or is not a directory")
        found = []
        for root, _dirs, names in os.walk(self.path, followlinks=True):
            for name in names:
                full = Path(root) / name
                if full.is_file():
                    found.append(full.relative_to(self.path))
        return sorted(found, key=lambda p: p.as_posix())


@dataclass
class RolloutSet:
    """Clean latents ``x0`` and their noise priors ``eps`` for ``N`` prompts.

    Online mode: ``eps`` is the Gaussian noise a rollout started from and ``x0`` the latent the
    deterministic ODE reached from it. Offline mode: ``x0`` encodes a real image and ``eps`` is
    fresh noise. ``height``/``width`` are the image size in pixels; ``meta`` holds JSON-able
    details (seeds, guidance, steps, policy id).
    """

    prompts: list[str]
    x0: torch.Tensor   # [N, C, h, w] clean latents
    eps: torch.Tensor  # [N, C, h, w] noise prior
    mode: str
    height: int
    width: int
    meta: dict[str, Any] = field(default_factory=dict)
    #: the prompts' text conditioning, computed once by the rollout step (``Policy.stored_conditioning``):
    #: ``tokens [N, L, D]``, ``lengths [N]``, ``pooled [N, P]``; ``negative.*`` rows are not per sample.
    #: With it the training process loads no text encoder. Empty: the trainer encodes prompts itself.
    conditioning: dict[str, torch.Tensor] = field(default_factory=dict)
    #: edit runs: each sample's source image [N, 3, Hs, Ws] in [0, 1] (the prompts are instructions on it);
    #: None for text-to-image. ``source_prompts``: the sources' captions (an ``against: direction`` term reads them).
    sources: torch.Tensor | None = None
    source_prompts: list[str] | None = None
    #: edit runs: what each edited image should show (the reward's text side instead of the instruction), or None
    target_prompts: list[str] | None = None

    def __post_init__(self) -> None:
        self.prompts = list(self.prompts)
        if self.sources is not None and (self.sources.ndim != 4 or self.sources.shape[1] != 3
                                         or self.sources.shape[0] != len(self.prompts)):
            raise ValueError(f"sources must be [N, 3, H, W] pixels, one per prompt ({len(self.prompts)}), got shape "
                             f"{tuple(self.sources.shape)}")
        if self.source_prompts is not None:
            self.source_prompts = list(self.source_prompts)
            if self.sources is None or len(self.source_prompts) != len(self.prompts):
                raise ValueError(f"source_prompts gives {len(self.source_prompts)} captions: give one per source "
                                 "image, and the sources with them")
        if self.target_prompts is not None:
            self.target_prompts = list(self.target_prompts)
            if len(self.target_prompts) != len(self.prompts):
                raise ValueError(f"target_prompts gives {len(self.target_prompts)} texts for {len(self.prompts)} "
                                 "prompts: give one per prompt")
        for key, value in self.conditioning.items():
            if not key.startswith("negative.") and value.shape[0] != len(self.prompts):
                raise ValueError(f"conditioning {key!r} has {value.shape[0]} rows for {len(self.prompts)} prompts: "
                                 "store one row per prompt (Policy.stored_conditioning)")
        if self.x0.ndim != 4:
            raise ValueError(f"x0 must be [N, C, h, w], got shape {tuple(self.x0.shape)}")
        if self.eps.shape != self.x0.shape:
            raise ValueError(f"x0 and eps must have the same shape, got {tuple(self.x0.shape)} "
                             f"and {tuple(self.eps.shape)}")
        if len(self.prompts) != self.x0.shape[0]:
            raise ValueError(f"{len(self.prompts)} prompts for {self.x0.shape[0]} latents: "
                             "give exactly one prompt per latent")
        if self.mode not in ROLLOUT_MODES:
            raise ValueError(f"mode must be one of {ROLLOUT_MODES}, got {self.mode!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"height and width must be positive pixel sizes, got {self.height}x{self.width}")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta must be JSON-serialisable (numbers, strings, lists, dicts): {e}") from e

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> RolloutSet:
        """The rollouts at ``indices`` (same mode, size and meta)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)  # [B]
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"batch indices must lie in [-{n}, {n}), got {idx.tolist()}")
        conditioning = {k: v if k.startswith("negative.") else v[idx] for k, v in self.conditioning.items()}
        rows = idx.tolist()
        return RolloutSet(prompts=[self.prompts[i] for i in rows],
                          x0=self.x0[idx.to(self.x0.device)], eps=self.eps[idx.to(self.eps.device)],
                          mode=self.mode, height=self.height, width=self.width, meta=dict(self.meta),
                          conditioning=conditioning,
                          sources=None if self.sources is None else self.sources[idx.to(self.sources.device)],
                          source_prompts=None if self.source_prompts is None else [self.source_prompts[i] for i in rows],
                          target_prompts=None if self.target_prompts is None else [self.target_prompts[i] for i in rows])

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``tensors.safetensors`` (x0, eps) and ``meta.json`` into ``directory``, each atomically."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"x0": self.x0.detach().cpu().contiguous(), "eps": self.eps.detach().cpu().contiguous(),
                   **{f"{COND_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in self.conditioning.items()}}
        if self.sources is not None:
            tensors["sources"] = self.sources.detach().cpu().contiguous()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{ROLLOUT_TENSORS}.")
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, directory / ROLLOUT_TENSORS)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {"format_version": ROLLOUT_FORMAT_VERSION, "prompts": self.prompts, "mode": self.mode,
                "height": self.height, "width": self.width, "shape": list(self.x0.shape), "meta": self.meta}
        for name in ("source_prompts", "target_prompts"):
            if getattr(self, name) is not None:
                meta[name] = getattr(self, name)
        atomic_write_text(directory / ROLLOUT_META, json.dumps(meta, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> RolloutSet:
        """Read a set written by :meth:`save`.

        Raises:
            FileNotFoundError: ``directory`` or one of its two files is missing.
            ValueError: a file is corrupt or the two files disagree.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        tensors_path, meta_path = directory / ROLLOUT_TENSORS, directory / ROLLOUT_META
        for path in (tensors_path, meta_path):
            if not path.is_file():
                raise FileNotFoundError(f"rollout set file {str(path)!r} is missing: a rollout set directory "
                                        f"holds {ROLLOUT_TENSORS} and {ROLLOUT_META} (written by RolloutSet.save)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            fields = {k: meta[k] for k in ("prompts", "mode", "height", "width", "meta")}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"rollout set file {str(meta_path)!r} is corrupt ({type(e).__name__}: {e}): "
                             "re-create the rollouts") from e
        try:
            tensors = load_file(tensors_path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"rollout set file {str(tensors_path)!r} is corrupt ({e}): re-create the rollouts") from e
        missing = {"x0", "eps"} - tensors.keys()
        if missing:
            raise ValueError(f"rollout set file {str(tensors_path)!r} lacks tensor(s) {sorted(missing)}")
        if "shape" in meta and list(tensors["x0"].shape) != meta["shape"]:
            raise ValueError(f"{str(tensors_path)!r} holds x0 of shape {list(tensors['x0'].shape)} but "
                             f"{str(meta_path)!r} says {meta['shape']}: the two files come from different saves")
        conditioning = {k.removeprefix(COND_PREFIX): v for k, v in tensors.items() if k.startswith(COND_PREFIX)}
        return cls(x0=tensors["x0"], eps=tensors["eps"], conditioning=conditioning, sources=tensors.get("sources"),
                   source_prompts=meta.get("source_prompts"), target_prompts=meta.get("target_prompts"), **fields)
