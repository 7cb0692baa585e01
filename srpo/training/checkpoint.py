"""Training checkpoints that survive SIGKILL: written aside, checksummed, renamed into place.

A checkpoint is a folder ``step-000012/`` holding

- ``trainable.safetensors``: the parameters being trained (all of them, or only LoRA's);
- ``optimizer.pt``: the optimizer state (tensors and numbers only: loaded with weights_only);
- ``rng-rank{r}.pt``: every rank's torch RNG state;
- ``trainer_state.json``: step, data position, history, fault counters;
- ``method.safetensors``: the method's own state when it has one (NFT's old policy, AWM's EMA), from the trainer;
- ``manifest.json``: size and SHA-256 of every file above, written last.

It is built in ``.tmp-step-000012-*`` and renamed, so a folder named ``step-*`` is complete unless
its files were damaged afterwards; :func:`latest_valid` checks the manifest and skips (with a
warning) anything that does not match.

:class:`Checkpointer` is the trainer's side: it saves a run's state, finds and checks the newest
checkpoint (same settings but for :data:`RESUMABLE_CHANGES`, same :data:`OBJECTIVE_VERSION`, same
number of processes) and restores it. :func:`save_diffusers_model` writes a run's result (a full
fine-tune) as a diffusers model folder.
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


#: Version of what an update optimises for the same settings; a checkpoint of another is not resumed.
#: 2: k-schedules and the shifted discount read from the grid's clean end, antialiased reward resize
#: (2026-11-26); 1 (or none recorded): before.
OBJECTIVE_VERSION = 2

#: Settings a resumed run may change: its length and bookkeeping, not what or how it trains.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "checkpoint_dir", "keep_checkpoints", "max_bad_steps", "log_every",
                     "trackers", "num_processes", "num_nodes"}


def rng_state() -> dict[str, torch.Tensor]:
    """This process's global generator states: the CPU's, and the current CUDA device's when in use."""
    state = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor] | torch.Tensor) -> None:
    """Restore :func:`rng_state` (a bare tensor: a CPU state from a checkpoint written before CUDA's was kept)."""
    state = state if isinstance(state, dict) else {"cpu": state}
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def trainable_state(processes, finetune: str) -> dict[str, torch.Tensor]:
    """The trained parameters by name (LoRA: the adapter only), gathered (every rank must call this)."""
    state = processes.full_state()
    if finetune == "lora":
        state = {k: v for k, v in state.items() if "lora_" in k}
    return state


class Checkpointer:
    """Saves and restores a run's trained weights, optimizer, scheduler and RNG states under ``cfg.checkpoint_dir``.

    ``processes`` (:class:`srpo.training.distributed.Processes`) gathers sharded state and says
    which process writes; the trainer hands over the rest of its state as a JSON-able dict.
    """

    def __init__(self, cfg, processes):
        self.cfg, self.processes = cfg, processes
        self.root = Path(cfg.checkpoint_dir)

    def save(self, step: int, optimizer, scheduler, trainer_state: dict,
             extra_files: dict[str, Any] | None = None) -> Path | None:
        """Checkpoint after ``step`` updates (every rank calls; the main process writes every rank's RNG state).

        ``extra_files``: more ``name -> writer(path)`` files (the guard's kept candidate), checksummed too.
        """
        procs = self.processes
        model_state = trainable_state(procs, self.cfg.finetune)
        optim_state = procs.optimizer_state(optimizer)
        rng_states = [rng_state()]
        if procs.world > 1:
            from accelerate.utils import gather_object

            rng_states = gather_object(rng_states)  # every rank's state, in rank order
        path = None
        if procs.is_main:
            state = {"step": step, "world_size": procs.world, "objective_version": OBJECTIVE_VERSION,
                     **trainer_state, "config": self.cfg.model_dump(mode="json")}
            files = {"trainable.safetensors": save_tensors(model_state),
                     "optimizer.pt": save_torch(optim_state),
                     "scheduler.pt": save_torch(scheduler.state_dict()),
                     **{f"rng-rank{r}.pt": save_torch(s) for r, s in enumerate(rng_states)},
                     **(extra_files or {}), STATE: save_json(state)}
            path = write_checkpoint(self.root, step, files, self.cfg.keep_checkpoints)
            log.info("saved checkpoint %s", path)
        procs.accelerator.wait_for_everyone()
        return path

    def find(self) -> tuple[Path, dict] | None:
        """The newest valid checkpoint, chosen by the main process (it alone checks the checksums).

        Every process resumes from that folder; one that cannot read it raises: the checkpoint
        folder must be shared by all nodes.
        """
        procs = self.processes
        found = latest_valid(self.root) if procs.is_main else None
        if procs.world == 1:
            return found
        from accelerate.utils import broadcast_object_list

        chosen = broadcast_object_list([str(found[0]) if found else None], from_process=0)[0]
        if chosen is None:
            return None
        folder = Path(chosen)
        if found is not None:
            return found
        try:
            return folder, read_state(folder)
        except CorruptCheckpoint as err:
            raise RuntimeError(f"process {procs.rank} cannot read checkpoint {folder}, which the main process "
                               f"resumes from ({err}): train.checkpoint_dir must be a folder every node "
                               "shares") from err

    def check_resumable(self, folder: Path, state: dict) -> None:
        """Refuse a checkpoint written by a run with other settings (other than its length and bookkeeping).

        Settings that only one side knows (added or removed by a newer version of this library) are
        not compared.
        """
        written = state.get("objective_version", 1)
        if written != OBJECTIVE_VERSION:
            raise RuntimeError(f"{folder} was written by a trainer whose update optimises something else for the same "
                               f"settings (objective version {written}, this one {OBJECTIVE_VERSION}; see "
                               "OBJECTIVE_VERSION): resuming would mix two objectives. Finish the run with the "
                               "version that wrote it, or use a new train.checkpoint_dir to start afresh")
        saved, current = state.get("config", {}), self.cfg.model_dump(mode="json")
        changed = sorted(k for k in set(saved) & set(current)
                         if k not in RESUMABLE_CHANGES and saved[k] != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5])
            raise RuntimeError(f"{folder} was written by a run with other settings ({details}): resuming would mix "
                               "two runs. Restore those settings, or use a new train.checkpoint_dir to start afresh")
        if state["world_size"] != self.processes.world:
            raise RuntimeError(f"{folder} was written by {state['world_size']} processes, this run has "
                               f"{self.processes.world}: resume with the same number of processes (the data order "
                               "depends on it)")

    def restore(self, optimizer, scheduler) -> dict | None:
        """Load the newest valid checkpoint into the module, ``optimizer``, ``scheduler`` and this rank's RNG.

        Returns its trainer state (``step``, ``folder`` and what the trainer handed to :meth:`save`),
        or None when there is none.
        """
        found = self.find()
        if found is None:
            return None
        folder, state = found
        self.check_resumable(folder, state)
        from safetensors.torch import load_file

        missing, unexpected = self.processes.load_model_state(load_file(str(folder / "trainable.safetensors")))
        if unexpected or (self.cfg.finetune == "full" and missing):
            raise CorruptCheckpoint(f"{folder}: weights do not fit this model (missing {missing[:3]}, "
                                    f"unexpected {unexpected[:3]}): was it written with another config?")
        self.processes.load_optimizer_state(optimizer, lambda: load_torch(folder / "optimizer.pt"))
        scheduler.load_state_dict(load_torch(folder / "scheduler.pt"))
        set_rng_state(load_torch(folder / f"rng-rank{self.processes.rank}.pt"))
        log.info("resumed from %s at step %d", folder, state["step"])
        return {**state, "folder": str(folder)}


def save_diffusers_model(model, state: dict[str, torch.Tensor], out_dir: Path, max_shard_size: str = "10GB") -> Path:
    """``model``'s config and ``state`` as a diffusers model folder (safetensors, sharded like diffusers)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_config(out_dir)
    split = split_torch_state_dict_into_shards(state, filename_pattern="diffusion_pytorch_model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state[n].contiguous() for n in names}, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out_dir / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out_dir

