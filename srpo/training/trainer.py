"""The trainer: it sets a run up, runs its loop and saves the result; the method owns the update.

- setup: the model (full or LoRA, a quantised frozen base), the processes (one, DDP or FSDP 2),
  AdamW behind an :class:`~srpo.training.optim.OptimizerStep` (clip, non-finite skip, counters),
  the :class:`~srpo.training.batches.Batches`, the :class:`~srpo.training.objective.RewardObjective`,
  the guard's runner, and the method (:mod:`srpo.training.methods`) with its
  :class:`~srpo.training.methods.MethodContext`;
- the loop: resume from the newest valid checkpoint, then per step ``method.update(ctx, step)``,
  progress and logs, the guard's check (and its recovery: the selected weights back, a lower
  learning rate), a checkpoint when due;
- save: the tuned transformer (or adapter) with ``training_log.json``.

Every draw is seeded from ``(train.seed, step, global sample index)``, so the result does not
depend on how the global batch is split over processes, and a resumed run continues exactly
where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from srpo.artifacts import RolloutSet
from srpo.cache import separate_cache
from srpo.config import RolloutConfig, TrainConfig, training_levels
from srpo.io import atomic_write_text
from srpo.models.base import Policy, cast_parameters
from srpo.models.quantize import quantize_frozen_base
from srpo.noise import derived_seed
from srpo.rewards.base import RewardModel
from srpo.rewards.combine import MultiReward
from srpo.training.batches import Batches
from srpo.training.checkpoint import Checkpointer, save_diffusers_model, save_tensors, trainable_state
from srpo.training.distributed import Processes, make_accelerator
from srpo.training.guard import Guard, GuardRunner
from srpo.training.lora import add_lora, save_lora
from srpo.training.methods import MethodContext, StepLog, check_method, method_for
from srpo.training.objective import RewardObjective
from srpo.training.optim import NonFiniteError, OptimizerStep

__all__ = ["NonFiniteError", "SRPOTrainer", "StepLog"]
log = logging.getLogger(__name__)


class SRPOTrainer:
    """Trains ``policy.transformer`` (full or LoRA) against ``reward`` on samples from ``rollouts``.

    A recipe in three calls: ``__init__`` sets up, ``train()`` runs the updates (resuming from
    ``train.checkpoint_dir`` when it holds a valid checkpoint), ``save(out_dir)`` writes the result.
    The run's settings are validated before, once (:meth:`srpo.training.job.TrainingJob.validate_run`);
    the trainer checks only the objects it is given: the method row against the loaded reward (a
    score-only one cannot feed a gradient method) and the rollout set (not empty).
    """

    def __init__(self, policy: Policy, reward: RewardModel | MultiReward, rollouts: RolloutSet, cfg: TrainConfig,
                 rollout_cfg: RolloutConfig, accelerator=None, guard: Guard | None = None):
        self.method = method_for(cfg)
        cfg = self.method.configure(cfg)  # the settings blocks the method reads, default-filled
        self.policy, self.rollouts, self.cfg, self.rollout_cfg = policy, rollouts, cfg, rollout_cfg
        self.grid, self.d_sigma = training_levels(cfg)
        self.objective = RewardObjective(reward, cfg, (float(self.grid.min()), float(self.grid.max())),
                                         self.d_sigma, policy.autocast)
        check_method(cfg, rollout_cfg, self.objective.score_only, repr(getattr(self.objective.reward, "name", "")))
        self.accelerator = accelerator or make_accelerator(cfg, cpu=policy.device.type == "cpu")
        self.processes = Processes(self.accelerator, cfg.distributed)
        self.batches = Batches(rollouts, policy, cfg, rollout_cfg, self.processes.rank, self.processes.world)
        self.checkpoints = Checkpointer(cfg, self.processes) if cfg.checkpoint_dir else None
        self.history: list[StepLog] = []
        # The global generator drives LoRA dropout only (every other draw has its own seed): seeded
        # per process, so masks differ across processes and repeat across runs (CPU and CUDA).
        torch.manual_seed(derived_seed(cfg.seed, "global", self.processes.rank))
        self.params, self.optimizer, self.scheduler = self._setup_model()
        self.step_fn = OptimizerStep(self.optimizer, self.scheduler, self.params, self.accelerator,
                                     cfg.max_grad_norm, cfg.max_bad_steps)
        sampler_sigmas = policy.rollout_sigmas(rollout_cfg.num_steps, rollout_cfg.shift, *rollouts.x0.shape[-2:])
        self.ctx = MethodContext(policy, self.objective, self.batches, self.processes, self.step_fn, cfg, rollout_cfg,
                                 self.grid, self.d_sigma, sampler_sigmas)
        self.method.start(self.ctx)  # before any resume: what it takes from the base weights is the base's
        self.guard = GuardRunner.for_run(guard, policy, rollouts, cfg, rollout_cfg, self.objective.reward,
                                         self.processes) if guard is not None else None
        if guard is not None and guard.cfg.anchor_pull > 0:  # the start the recoveries' trust region pulls to
            self.step_fn.anchor()

    # ---- setup --------------------------------------------------------------------------
    def _setup_model(self):
        """Trainable parameters (LoRA adapter or the whole transformer), sharded/wrapped; optimizer, scheduler."""
        cfg, transformer, policy = self.cfg, self.policy.transformer, self.policy
        if cfg.finetune == "lora":
            master = transformer.dtype
            if policy.frozen_dtype != master:  # frozen base weights in the compute dtype: half of fp32's memory
                cast_parameters(transformer, policy.frozen_dtype)
            quantize_frozen_base(policy, cfg.finetune)  # policy.base_quantization: int8/fp8/nf4 base weights
            params = add_lora(transformer, cfg.lora_rank, cfg.lora_alpha, list(cfg.lora_targets or policy.lora_targets),
                              cfg.lora_dropout, seed=cfg.seed)
            for p in params:  # the adapter trains in the master dtype (fp32)
                p.data = p.data.to(master)
        else:
            transformer.requires_grad_(True)
            params = list(transformer.parameters())
        if cfg.vae_gradient_checkpointing:
            policy.pipe.vae.enable_gradient_checkpointing()
        for model in self.objective.reward_models:
            model.requires_grad_(False).eval()
        if self.processes.sharded:  # FSDP 2 replaces the parameters by sharded ones: the optimizer takes those
            self.processes.shard(transformer, policy.block_classes, cfg.fsdp_param_dtype)
            params = [p for p in transformer.parameters() if p.requires_grad]
        # fused AdamW: one kernel over all parameters (CPU and CUDA); FSDP's sharded parameters take
        # the multi-tensor path instead
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                      fused=not self.processes.sharded,
                                      foreach=None if self.processes.sharded else False)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        optimizer, scheduler = self.processes.prepare(transformer, optimizer, scheduler)
        policy.set_forward_module(self.processes.module)  # forwards go through the DDP wrapper or FSDP shards
        if self.accelerator.is_main_process and cfg.trackers:
            self.accelerator.init_trackers("srpo", config=cfg.model_dump(mode="json"))
        return params, optimizer, scheduler

    @property
    def skipped(self) -> int:
        """Updates skipped for a non-finite loss or gradient (:class:`OptimizerStep`)."""
        return self.step_fn.skipped

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters by name (LoRA: the adapter only), gathered (every rank must call this)."""
        return trainable_state(self.processes, self.cfg.finetune)

    def guard_check(self, step: int):
        """The guard's check after ``step`` updates when one is due (else None).

        It renders and scores in eval mode with its own seeded noise and its own prompt caches, so
        the training's random streams, modes and cached encodings are exactly as without it.
        """
        with contextlib.ExitStack() as caches:
            caches.enter_context(separate_cache(self.policy, "prompt_cache"))
            for model in self.objective.reward_models:
                caches.enter_context(separate_cache(model, "_text_cache"))
            check = self.guard.maybe_check(step, self.cfg.steps, self.trainable_state)
        if check is not None and self.cfg.trackers:
            self.accelerator.log(self.guard.guard.scalars(check), step=step)
        return check

    # ---- the loop -----------------------------------------------------------------------
    def train_step(self, step: int) -> StepLog:
        """One update: the method's (:meth:`srpo.training.methods.Method.update`)."""
        return self.method.update(self.ctx, step)

    def train(self, on_step: Callable[[StepLog], None] | None = None) -> list[StepLog]:
        """Run until ``cfg.steps`` updates are done, resuming from a checkpoint when there is one.

        The progress bar shows every update on the terminal; log lines come every ``log_every``
        updates (and after the last), written above the bar rather than through it.
        """
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        start = self.resume()
        if self.guard is not None:
            self.guard_check(start)  # the base model's check (a resumed run has it already)
        bar = tqdm(total=self.cfg.steps, initial=start, desc=self.cfg.method, unit="step",
                   disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        try:
            with logging_redirect_tqdm(loggers=[logging.root, logging.getLogger("srpo")], tqdm_class=type(bar)):
                for step in range(start, self.cfg.steps):
                    if self.stopped:
                        break
                    entry = self.train_step(step)
                    self.history.append(entry)
                    self._report(entry, bar)
                    if on_step is not None:
                        on_step(entry)
                    if self.guard is not None:
                        check = self.guard_check(step + 1)
                        if check is not None and check.rewind is not None:  # back to the selection, lower lr
                            self.guard.recover(check, self.processes.load_model_state_from_main, self.optimizer)
                            self._tighten()
                    every = self.cfg.checkpoint_every
                    due = every and ((step + 1) % every == 0 or step + 1 == self.cfg.steps or self.stopped)
                    if self.checkpoints and due and self.step_fn.bad_in_a_row == 0:  # never after a bad update
                        self.save_checkpoint(step + 1)
                if self.stopped:
                    log.warning("guard stopped the run after %d of %d updates: %s", len(self.history),
                                self.cfg.steps, self.guard.guard.stopped)
        finally:
            bar.close()
        return self.history

    def _tighten(self) -> None:
        """The trust region after the guard's recoveries: ``anchor_pull`` x the recoveries made (from its history)."""
        self.step_fn.pull = self.guard.guard.cfg.anchor_pull * self.guard.guard.recoveries

    @property
    def stopped(self) -> bool:
        """Whether the guard has stopped the run (its rules' ``stop`` action fired)."""
        return self.guard is not None and self.guard.should_stop

    def _report(self, entry: StepLog, bar) -> None:
        bar.update(1)
        bar.set_postfix(reward=f"{entry.reward:.4f}", loss=f"{entry.loss:.4f}", s_per_step=f"{entry.seconds:.2f}",
                        img_s=f"{entry.images_per_second:.1f}", refresh=False)
        if entry.step % self.cfg.log_every == 0 or entry.step == self.cfg.steps - 1:
            log.info("step %d/%d reward %.4f loss %.4f |g| %.3g %.2f s/step %.1f img/s%s", entry.step + 1,
                     self.cfg.steps, entry.reward, entry.loss, entry.grad_norm, entry.seconds,
                     entry.images_per_second, " (skipped)" if entry.skipped else "")
        if self.cfg.trackers:
            self.accelerator.log({k: v for k, v in asdict(entry).items() if isinstance(v, (int, float))},
                                 step=entry.step)

    # ---- checkpoints --------------------------------------------------------------------
    METHOD_FILE = "method.safetensors"  # the method's own state (an old policy, an EMA), when it has one

    def save_checkpoint(self, step: int) -> Path | None:
        """Checkpoint after ``step`` updates (every rank calls; the main process writes)."""
        state = {**self.step_fn.state_dict(), "history": [asdict(h) for h in self.history]}
        files = {}
        method_state = self.method.state_dict()  # every rank takes part in gathering
        if method_state and self.processes.is_main:
            files[self.METHOD_FILE] = save_tensors(method_state)
        if self.guard is not None:
            state["guard"] = self.guard.state_dict()
            if self.guard.keeper.step is not None and self.processes.is_main:
                files[GuardRunner.CANDIDATE_FILE] = self.guard.save_candidate
        return self.checkpoints.save(step, self.optimizer, self.scheduler, state, files)

    def resume(self) -> int:
        """Load the newest valid checkpoint; returns the step to continue from (0 if none)."""
        state = self.checkpoints.restore(self.optimizer, self.scheduler) if self.checkpoints else None
        if state is None:
            return 0
        self.history = [StepLog(**h) for h in state["history"]]
        self.step_fn.load_state_dict(state)
        method_file = Path(state["folder"]) / self.METHOD_FILE
        if method_file.exists():
            from safetensors.torch import load_file

            self.method.load_state_dict(load_file(str(method_file)))
        if self.guard is not None and "guard" in state:
            self.guard.load_state_dict(state["guard"], Path(state["folder"]) / GuardRunner.CANDIDATE_FILE)
            self._tighten()
        return int(state["step"])

    # ---- output -------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Full: the tuned transformer as a diffusers folder. LoRA: ``pytorch_lora_weights.safetensors``.

        Both with ``training_log.json``; written by the main process.
        """
        out_dir = Path(out_dir)
        acc = self.accelerator
        published = len(self.history)
        if self.guard is not None:  # the selected check's weights, not necessarily the last update's
            chosen = self.guard.finish(self.processes.load_model_state_from_main, len(self.history))
            published = len(self.history) if chosen is None else chosen
        state = self.processes.full_state()  # every rank takes part in gathering FSDP shards
        if acc.is_main_process:
            model = self.processes.unwrapped()
            if self.cfg.finetune == "lora":
                save_lora(self.policy, model, out_dir, state)
            else:  # diffusers' save_pretrained reads model.state_dict(), which holds shards under FSDP
                save_diffusers_model(model, state, out_dir)
            atomic_write_text(out_dir / "training_log.json", json.dumps({
                "config": self.cfg.model_dump(mode="json"),
                "d_sigma": self.d_sigma,
                "processes": self.processes.world,
                "strategy": self.processes.description,
                "skipped_updates": self.skipped,
                "history": [asdict(h) for h in self.history],
                "published_update": published,
                "guard": self.guard.guard.summary() if self.guard is not None else None,
            }, indent=2))
        acc.wait_for_everyone()
        if self.cfg.trackers:
            acc.end_training()
        return out_dir
