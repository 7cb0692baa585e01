"""The optimizer step every method ends its update with: clip, the non-finite skip, AdamW and its scheduler.

One object with its own state (the skip counters), saved in checkpoints next to the optimizer's.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Too many consecutive updates had a non-finite loss or gradient."""


class OptimizerStep:
    """Applies the accumulated gradients of ``params``: ``step(update, values) -> (grad norm, skipped)``.

    When any of ``values`` (the update's loss and rewards, already averaged over processes) or the
    gradient norm is not finite, the optimizer step is skipped and counted; ``max_bad_steps`` in a
    row raise :class:`NonFiniteError` (the last good checkpoint is kept: the trainer does not save
    during a bad streak).
    """

    def __init__(self, optimizer, scheduler, params: list[torch.nn.Parameter], accelerator,
                 max_grad_norm: float, max_bad_steps: int):
        self.optimizer, self.scheduler, self.params, self.accelerator = optimizer, scheduler, params, accelerator
        self.max_grad_norm, self.max_bad_steps = max_grad_norm, max_bad_steps
        self.anchors: list[torch.Tensor] | None = None  # the trained parameters at the start (a trust region)
        self.pull = 0.0  # the share of the distance to the anchors each applied update takes back
        self.skipped = 0  # updates skipped in the whole run
        self.bad_in_a_row = 0  # the current streak of skipped updates

    def anchor(self) -> None:
        """Keep a copy of the parameters as they are now (the run's start) for :attr:`pull` to return towards."""
        self.anchors = [p.detach().clone() for p in self.params]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, update: int, values: list[float]) -> tuple[float, bool]:
        """Clip, check and apply the gradients of update ``update``: (grad norm, skipped)."""
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm) if grad_norm is not None else 0.0
        skipped = not all(math.isfinite(v) for v in (*values, grad_norm))
        if skipped:
            self.zero_grad()
            self.skipped += 1
            self.bad_in_a_row += 1
            log.warning("step %d: non-finite reward, loss or gradient, update skipped (%d in a row, %d in all)",
                        update, self.bad_in_a_row, self.skipped)
            if self.bad_in_a_row >= self.max_bad_steps:
                raise NonFiniteError(f"{self.bad_in_a_row} updates in a row had a non-finite reward, loss or "
                                     "gradient; the last good checkpoint is kept. Check the learning rate, dtype "
                                     "and reward scale, then resume")
        else:
            self.optimizer.step()
            self.scheduler.step()
            self.bad_in_a_row = 0
            if self.pull > 0 and self.anchors is not None:  # the trust region: back towards the start
                with torch.no_grad():
                    for p, a in zip(self.params, self.anchors):
                        p.lerp_(a, self.pull)
        return grad_norm, skipped

    def state_dict(self) -> dict:
        """The counters (the optimizer's and scheduler's own state is saved by the checkpointer)."""
        return {"skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.bad_in_a_row = int(state["skipped"]), int(state["bad_in_a_row"])
