"""The plain supervised loop the world's models are fitted with (generator and reward alike).

AdamW, a warm-up then cosine learning rate, gradient clipping at 1, a loss history and a
progress line every ``log_every`` steps. Only the losses differ between the world's models.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterable, Optional

import torch

log = logging.getLogger(__name__)


def warmup_cosine(optimizer, steps: int, warmup_fraction: float = 0.05):
    """Linear warm-up over ``warmup_fraction`` of ``steps``, then cosine decay to a tenth."""
    warmup = max(1, int(warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Fitter:
    """One optimiser update per ``update(step, loss)``; keeps ``history`` and reports progress."""

    def __init__(self, params: Iterable[torch.nn.Parameter], *, steps: int, learning_rate: float,
                 weight_decay: float, warmup_fraction: float, label: str, log_every: int,
                 on_log: Optional[Callable[[int, float], None]] = None):
        self.params = list(params)
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, weight_decay=weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, steps, warmup_fraction)
        self.steps, self.label, self.log_every, self.on_log = steps, label, log_every, on_log
        self.history: list[float] = []
        self.start = time.perf_counter()

    def update(self, step: int, loss: torch.Tensor) -> float:
        """Backward ``loss``, clip, step the optimiser and the schedule; returns the loss value."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.history.append(loss.item())
        if step % self.log_every == 0 or step == self.steps - 1:
            log.info("%s step %d/%d loss %.4f (%.0f s)", self.label, step + 1, self.steps, self.history[-1],
                     time.perf_counter() - self.start)
            if self.on_log is not None:
                self.on_log(step, self.history[-1])
        return self.history[-1]
