"""What a training method is and what it receives.

A method owns its whole update: given a :class:`MethodContext` (the policy, the reward objective,
the batches, the processes, the optimizer step, the configs and the noise schedules) and a step
number, :meth:`Method.update` draws its samples, computes its loss, backpropagates and ends with
``ctx.optimizer.step``; it returns a :class:`StepLog`. It never sees the trainer.

Each method class is a row of the registry (:data:`srpo.training.methods.METHODS`) and declares
what it needs, which the run's validation reads before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from srpo.config import METHOD_SETTINGS, training_levels
from srpo.training.batches import Batches
from srpo.training.distributed import Processes
from srpo.training.objective import RewardObjective
from srpo.training.optim import OptimizerStep

#: (grid index, sigma, discount weight) of one injected noise level.
Level = tuple[int, float, float]


@dataclass
class StepLog:
    """What one update did (averaged over processes); the trainer keeps one per step."""

    step: int
    reward: float  # mean denoise-branch reward (scaled like the reward model's score)
    inversion_reward: float | None
    loss: float
    grad_norm: float
    sigmas: list[float]
    skipped: bool
    seconds: float
    images_per_second: float  # decoded-and-scored images per second, all processes
    terms: dict[str, float] | None = None  # a multi-reward's unweighted denoise-branch value of each term


@dataclass
class MethodContext:
    """Everything an update reads; built once by the trainer."""

    policy: object  # srpo.models.base.Policy
    objective: RewardObjective
    batches: Batches
    processes: Processes
    optimizer: OptimizerStep
    cfg: object  # TrainConfig
    rollout_cfg: object  # RolloutConfig
    grid: torch.Tensor  # [n] the training levels, decreasing
    d_sigma: float  # Direct-Align's model step
    sampler_sigmas: torch.Tensor  # [T+1] the rollout sampler's levels

    @property
    def accelerator(self):
        return self.processes.accelerator

    @property
    def grid_bounds(self) -> tuple[float, float]:
        return self.objective.grid_bounds


class Method:
    """A row of the method registry: a name, what it needs, and its update."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line for the config's description and the errors
    takes_score_only: ClassVar[bool] = False  # False: it backpropagates through the reward
    has_inversion: ClassVar[bool] = False  # whether the inversion branch (train.inversion) belongs to it
    steps_from_level: ClassVar[bool] = False  # True: it starts a model step d_sigma from each training level
    #: The settings blocks of ``TrainConfig`` it reads (names in :data:`srpo.config.METHOD_SETTINGS`):
    #: another method's block set with this method is refused, and the ones it reads default-filled.
    settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def configure(cls, cfg):
        """``cfg`` with every settings block this row reads filled with its defaults where not given."""
        missing = {name: METHOD_SETTINGS[name]() for name in cls.settings if getattr(cfg, name) is None}
        return cfg.model_copy(update=missing) if missing else cfg

    @classmethod
    def validate(cls, cfg, rollout_cfg) -> None:
        """What every row refuses (another method's settings block, the inversion branch where it does not
        belong, a model step that leaves (0, 0.99]), then the row's own :meth:`check` on the filled config."""
        for name in METHOD_SETTINGS:
            if getattr(cfg, name) is not None and name not in cls.settings:
                readers = " or ".join(sorted(m.name for m in _rows() if name in m.settings and hasattr(m, "name")))
                reads = ", ".join(f"train.{b}" for b in cls.settings) or "no settings block"
                raise ValueError(f"train.{name} is set but train.method is {cls.name!r} (which reads {reads}): "
                                 f"remove train.{name} or set method: {readers}")
        cfg = cls.configure(cfg)
        if cfg.inversion and not cls.has_inversion:
            owners = " or ".join(sorted({m.name for m in _rows() if m.has_inversion}))
            raise ValueError(f"train.inversion is true but the inversion branch belongs to method {owners}, not "
                             f"{cls.name!r}: set inversion: false, or method: {owners}")
        training_levels(cfg, step_up=cls.steps_from_level, step_down=cls.steps_from_level and cfg.inversion)
        cls.check(cfg, rollout_cfg)

    @classmethod
    def check(cls, cfg, rollout_cfg) -> None:
        """Refuse settings this method cannot run with these rollouts (before any model work)."""

    @classmethod
    def micro_batch(cls, cfg) -> int:
        """Samples in one backward micro-step on one process (what the memory plan traces; ``cfg`` filled)."""
        return cfg.batch_size

    @classmethod
    def weight_copies(cls, cfg) -> int:
        """How many copies of the trained weights the method keeps beside them (an old policy, an EMA, a full
        fine-tune's frozen base): the memory plan counts them (``cfg`` filled by :meth:`configure`)."""
        return 0

    def start(self, ctx: MethodContext) -> None:
        """Called once the model is set up, before any resume: take what must come from the base weights
        (e.g. a frozen copy of them)."""

    def update(self, ctx: MethodContext, step: int) -> StepLog:
        """One whole update: its samples, loss, backward and ``ctx.optimizer.step``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors the method carries from update to update (an old policy, an EMA), saved in checkpoints
        (full tensors, gathered: every rank calls it); empty for a stateless method."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s tensors on resume (every rank gets the full tensors)."""



def _rows(cls: type[Method] = Method) -> list[type[Method]]:
    """Every method class defined (the registry's rows among them), depth first."""
    return [row for sub in cls.__subclasses__() for row in (sub, *_rows(sub))]
