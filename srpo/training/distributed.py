"""The trainer's processes: accelerate's DDP, or FSDP 2 sharding done here, and gathering their state.

:class:`Processes` is what the trainer asks about the run's processes: its rank and world, whether
the transformer is sharded, the context for a micro-step's backward, and the full (gathered)
model and optimizer states a checkpoint or the saved model needs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from srpo.config import TrainConfig


def make_accelerator(cfg: TrainConfig, cpu: bool):
    """An ``Accelerator`` for the config: processes, devices, DDP and trackers.

    FSDP is not accelerate's here: its plugin is ignored on CPU processes (gloo), so the trainer
    shards with FSDP 2 itself (:func:`shard_fsdp`), the same on CPUs and GPUs.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(cpu=cpu, log_with=cfg.trackers or None,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def shard_fsdp(transformer: torch.nn.Module, device: torch.device, world: int, block_classes: tuple[str, ...],
               param_dtype: str | None = None) -> torch.nn.Module:
    """FSDP 2 (``fully_shard``) on every block whose class is named in ``block_classes``, then on the whole transformer.

    Parameters are sharded over the ``world`` processes; ``param_dtype`` (bf16) gathers and
    computes in that dtype while shards and gradient reduction stay fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    mixed = MixedPrecisionPolicy(param_dtype=getattr(torch, param_dtype) if param_dtype else None,
                                 reduce_dtype=torch.float32 if param_dtype else None)
    for block in transformer.modules():
        if type(block).__name__ in block_classes:
            fully_shard(block, mesh=mesh, mp_policy=mixed, reshard_after_forward=True)
    fully_shard(transformer, mesh=mesh, mp_policy=mixed, reshard_after_forward=True)
    return transformer


@dataclass
class Processes:
    """The accelerator and the module its processes train (DDP-wrapped, FSDP-sharded or bare).

    ``module`` is set by :meth:`prepare`; ``strategy`` is ``cfg.distributed``.
    """

    accelerator: object
    strategy: str = "ddp"
    module: torch.nn.Module | None = None

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def sharded(self) -> bool:
        """Whether the transformer is sharded with FSDP (``distributed: fsdp`` over several processes)."""
        return self.strategy == "fsdp" and self.world > 1

    @property
    def description(self) -> str:
        return "fsdp" if self.sharded else "ddp" if self.world > 1 else "single process"

    def shard(self, transformer: torch.nn.Module, block_classes: tuple[str, ...], param_dtype: str | None) -> None:
        """Shard ``transformer`` in place when :attr:`sharded` (FSDP 2 replaces its parameters by sharded ones)."""
        if self.sharded:
            shard_fsdp(transformer, self.accelerator.device, self.world, block_classes, param_dtype)

    def prepare(self, transformer: torch.nn.Module, optimizer, scheduler):
        """accelerate's prepare: returns (optimizer, scheduler); :attr:`module` is what forwards go through."""
        if self.sharded:
            self.module = transformer
            return self.accelerator.prepare(optimizer, scheduler)
        self.module, optimizer, scheduler = self.accelerator.prepare(transformer, optimizer, scheduler)
        return optimizer, scheduler

    def gradient_sync(self, sync: bool):
        """Context for one micro-step's backward: reduce gradients across processes only if ``sync``.

        FSDP reduces every micro-step anyway: skipping it would hold every parameter's gradient
        unsharded until the last backward (48 GB in fp32 for a fully fine-tuned FLUX.1).
        """
        if self.sharded:
            return nullcontext()
        return self.accelerator.no_sync(self.module) if not sync and self.world > 1 else nullcontext()

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.module)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The module's whole state dict, FSDP shards gathered (every rank must call this)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if self.accelerator.device.type == "cpu":  # gathered in place, not copied: own the memory
                state = {k: v.clone() for k, v in state.items()}
            return state
        return self.accelerator.get_state_dict(self.module)

    def load_model_state(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load full tensors (every rank keeps its shards under FSDP); returns (missing, unexpected) names."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            return set_model_state_dict(self.module, state, options=StateDictOptions(full_state_dict=True,
                                                                                     strict=False))
        return self.unwrapped().load_state_dict(state, strict=False)

    def load_model_state_from_main(self, state: dict[str, torch.Tensor]) -> None:
        """Load full tensors that only the main process holds under FSDP (broadcast from rank 0); elsewhere
        every process passes its own full copy."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.module, state, options=StateDictOptions(full_state_dict=True, strict=False,
                                                                              broadcast_from_rank0=True))
            return
        self.unwrapped().load_state_dict(state, strict=False)

    def optimizer_state(self, optimizer) -> dict:
        """The full optimizer state (FSDP: all ranks take part, rank 0 gets it all)."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(self.module, optimizer.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.accelerator.device.type == "cpu":  # as full_state: own the memory, not the gather's buffers
            state = _owned(state)
        return state

    def load_optimizer_state(self, optimizer, read) -> None:
        """Load the state ``read()`` returns (FSDP: the main process reads it and sends each rank its shards)."""
        if not self.sharded:
            optimizer.load_state_dict(read())
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        state = read() if self.is_main else {}
        set_optimizer_state_dict(self.module, optimizer.optimizer, state,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def _owned(obj):
    """``obj`` (nested dicts / lists of tensors) with every tensor cloned."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _owned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_owned(v) for v in obj)
    return obj
