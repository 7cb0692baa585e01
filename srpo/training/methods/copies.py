"""A copy of the trained parameters that a method keeps beside them: DiffusionNFT's old policy, AWM's
EMA policy, a full fine-tune's frozen base.

It holds one tensor per trainable parameter (LoRA: the adapter's only; FSDP: each rank its shards)
and is *swapped in* for a no-grad forward, so the one module serves the trained policy and its copy,
whatever wraps it (DDP, FSDP) and whichever family it is.
"""

from __future__ import annotations

import contextlib

import torch

from srpo.nft import soft_update_


def trainable_named(processes) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every trained parameter of the unwrapped module, in order."""
    return [(n, p) for n, p in processes.unwrapped().named_parameters() if p.requires_grad]


def _full(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a parameter's value (FSDP: gathered from every rank's shard)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class ParamCopy:
    """Values for ``params`` (a copy of them at creation) with a swap-in and a soft update."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]]):
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        with torch.no_grad():
            self.values = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def _swap(self) -> None:
        """Exchange the parameters' values and the copy's, one parameter at a time (one parameter's memory
        in flight, not a whole model's; bit-exact, and in place, so shards stay where FSDP put them)."""
        for p, v in zip(self.params, self.values):
            held = p.detach().clone()
            p.copy_(v)
            v.copy_(held)

    @contextlib.contextmanager
    def swapped_in(self):
        """The module computes with the copy inside the block (no grad), with its own weights again after it."""
        self._swap()
        try:
            with torch.no_grad():
                yield
        finally:
            self._swap()

    def soft_update(self, decay: float) -> None:
        """``copy <- decay * copy + (1 - decay) * params`` (0: the copy becomes the parameters)."""
        soft_update_(self.values, self.params, decay)

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """Full tensors by ``prefix + parameter name`` (every rank calls it under FSDP)."""
        return {prefix + n: _full(v).detach().cpu() for n, v in zip(self.names, self.values)}

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        missing = [n for n in self.names if prefix + n not in state]
        if missing:
            raise RuntimeError(f"the checkpoint's method state lacks {prefix}{missing[0]} (and {len(missing) - 1} "
                               "more): was it written with another train.finetune or model?")
        with torch.no_grad():
            for n, v in zip(self.names, self.values):
                full = state[prefix + n]
                if hasattr(v, "device_mesh"):  # FSDP: keep this rank's shard of the full tensor
                    from torch.distributed.tensor import distribute_tensor

                    full = distribute_tensor(full.to(v.device_mesh.device_type), v.device_mesh, v.placements)
                v.copy_(full.to(v.dtype) if not hasattr(full, "device_mesh") else full)


class FrozenBase:
    """The base model a KL term pulls towards: LoRA, the transformer with its adapters off; full fine-tuning,
    a :class:`ParamCopy` taken by :meth:`take` before the first update (and before any resume)."""

    def __init__(self):
        self.copy: ParamCopy | None = None

    def take(self, ctx) -> None:
        if ctx.cfg.finetune == "full":
            self.copy = ParamCopy(trainable_named(ctx.processes))

    @contextlib.contextmanager
    def swapped_in(self, ctx):
        """The policy computes the base's velocity inside the block (no grad)."""
        if self.copy is not None:
            with self.copy.swapped_in():
                yield
            return
        model = ctx.processes.unwrapped()
        model.disable_adapters()
        try:
            with torch.no_grad():
                yield
        finally:
            model.enable_adapters()
