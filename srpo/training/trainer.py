"""The SRPO / Direct-Align trainer: one process or many (accelerate with DDP, or FSDP 2).

One update, for each process's batch of clean samples ``x0`` with their noise ``eps``:

    for each of n injected noise levels t (from the training grid, discount lambda(t)):
        denoise branch:   x0hat = Direct-Align(x0, eps, t)      reward towards positive words
        inversion branch: x0hat = inversion(x0, eps, t)         reward towards negative words
        each branch: image = VAE.decode(x0hat); loss = lambda * loss(r(image)); backward
        (fuse_branches: both branches as one batch of 2B, one forward, decode and backward)
    clip grad norm; AdamW step (skipped, and counted, if anything was non-finite)

Gradients flow through the reward's image tower and the VAE decoder into the transformer (or
its LoRA adapter) only. The reward is one feature reward (image and text features, the text side
cached per prompt variant), or a weighted sum of terms of any kind (:class:`MultiReward`:
``rewards:``, or a single joint / image-only reward), each term logged per update. That is method
``srpo``; the others (:mod:`srpo.training.methods`) draw their levels and recover x0hat their own
way, through the same update.

Randomness is counter-based: every draw is seeded from ``(train.seed, step, global sample
index)``, so the result does not depend on how the global batch is split over processes, and a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from srpo.artifacts import RolloutSet
from srpo.config import RolloutConfig, TrainConfig, check_checkpointing, training_levels
from srpo.io import atomic_write_text
from srpo.losses import reward_loss
from srpo.cache import separate_cache
from srpo.models.base import Policy, cast_parameters
from srpo.models.quantize import quantize_frozen_base
from srpo.noise import derived_seed, seeded_noise
from srpo.rewards.base import RewardModel
from srpo.rewards.combine import MultiReward, reward_kind, single_term_reward
from srpo.rewards.config import RewardUse
from srpo.rewards.scores import is_score_only
from srpo.schedules import linear_k
from srpo.srp import semantic_reward, with_control
from srpo.training.checkpoint import Checkpointer, trainable_state
from srpo.training.guard import CandidateKeeper, Guard, GuardRunner, policy_image_generator
from srpo.training.distributed import Processes, make_accelerator
from srpo.training.lora import add_lora, save_lora
from srpo.training.methods import apply_gradients, method_for
from srpo.training.sizes import check_batch_size

log = logging.getLogger(__name__)


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


class NonFiniteError(RuntimeError):
    """Too many consecutive updates had a non-finite loss or gradient."""




class SRPOTrainer:
    """Trains ``policy.transformer`` (full or LoRA) against ``reward`` on samples from ``rollouts``.

    A recipe in three calls: ``__init__`` sets up (model, optimizer, processes, checkpoints),
    ``train()`` runs the updates (resuming from ``train.checkpoint_dir`` when it holds a valid
    checkpoint), ``save(out_dir)`` writes the result. The method (``train.method``) is chosen once
    (:mod:`srpo.training.methods`); processes and sharding are :mod:`srpo.training.distributed`'s,
    checkpoints :mod:`srpo.training.checkpoint`'s.
    """

    def __init__(self, policy: Policy, reward: RewardModel | MultiReward, rollouts: RolloutSet, cfg: TrainConfig,
                 rollout_cfg: RolloutConfig, accelerator=None, guard: Guard | None = None):
        if len(rollouts) == 0:
            raise ValueError("the rollout set is empty: nothing to train on")
        check_batch_size(cfg, len(rollouts))
        check_checkpointing(cfg)
        self.method = method_for(cfg)
        self.method.check(cfg, rollout_cfg)
        self.policy, self.rollouts = policy, rollouts
        self.reward = self._reward_terms(reward, cfg)
        self.cfg, self.rollout_cfg = cfg, rollout_cfg
        self.grid, self.d_sigma = training_levels(cfg)
        self.grid_bounds = float(self.grid.min()), float(self.grid.max())  # (sigma_lo, sigma_hi)
        self.sampler_sigmas = policy.rollout_sigmas(rollout_cfg.num_steps, rollout_cfg.shift,  # DRaFT baselines
                                                     *rollouts.x0.shape[-2:])
        self.accelerator = accelerator or make_accelerator(cfg, cpu=policy.device.type == "cpu")
        self.processes = Processes(self.accelerator, cfg.distributed)
        self.checkpoints = Checkpointer(cfg, self.processes) if cfg.checkpoint_dir else None
        self.history: list[StepLog] = []
        self.bad_in_a_row = 0
        self.skipped = 0
        # The global generator drives LoRA dropout only (every other draw has its own seed): seeded
        # per process, so masks differ across processes and repeat across runs (CPU and CUDA).
        torch.manual_seed(derived_seed(cfg.seed, "global", self.processes.rank))
        self._setup_model()
        self.guard = self._setup_guard(guard) if guard is not None else None

    # ---- setup --------------------------------------------------------------------------
    @staticmethod
    def _reward_terms(reward, cfg: TrainConfig):
        """A joint or image-only reward as a one-term multi-reward with the run's form, words and k;
        a feature or score-only reward, or a multi-reward, as it is."""
        if isinstance(reward, MultiReward) or is_score_only(reward):
            return reward
        if reward_kind(reward) == "feature":
            if cfg.reward_form == "image_relative":
                raise ValueError("train.reward_form 'image_relative' is for image-only rewards, but the reward reads "
                                 "text: use reward_form 'weighted', 'srp', 'sgp', 'cfg' or 'plain'")
            return reward
        use = RewardUse(form=cfg.reward_form, **cfg.model_dump(include=set(RewardUse.model_fields) - {"weight", "form"}))
        return single_term_reward(reward, use)

    def lora_targets(self) -> list[str]:
        """``train.lora_targets``, else the policy family's own (``policy.lora_targets``)."""
        return list(self.cfg.lora_targets or self.policy.lora_targets)

    def _setup_model(self) -> None:
        cfg, transformer = self.cfg, self.policy.transformer
        if cfg.finetune == "lora":
            master = transformer.dtype
            if self.policy.frozen_dtype != master:  # frozen base weights in the compute dtype: half of fp32's memory
                cast_parameters(transformer, self.policy.frozen_dtype)
            quantize_frozen_base(self.policy, cfg.finetune)  # policy.base_quantization: int8/fp8/nf4 base weights
            self.params = add_lora(transformer, cfg.lora_rank, cfg.lora_alpha, self.lora_targets(),
                                   cfg.lora_dropout, seed=cfg.seed)
            for p in self.params:  # the adapter trains in the master dtype (fp32)
                p.data = p.data.to(master)
        else:
            transformer.requires_grad_(True)
            self.params = list(transformer.parameters())
        if cfg.vae_gradient_checkpointing:
            self.policy.pipe.vae.enable_gradient_checkpointing()
        for model in self.reward_models:
            model.requires_grad_(False).eval()
        if self.processes.sharded:  # FSDP 2 replaces the parameters by sharded ones: the optimizer takes those
            self.processes.shard(transformer, self.policy.block_classes, cfg.fsdp_param_dtype)
            self.params = [p for p in transformer.parameters() if p.requires_grad]
        # fused AdamW: one kernel over all parameters (CPU and CUDA); FSDP's sharded
        # parameters take the multi-tensor path instead
        optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, betas=cfg.betas,
                                      weight_decay=cfg.weight_decay, fused=not self.processes.sharded,
                                      foreach=None if self.processes.sharded else False)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        self.optimizer, self.scheduler = self.processes.prepare(transformer, optimizer, scheduler)
        self.policy.set_forward_module(self.processes.module)  # forwards go through the DDP wrapper or FSDP shards
        if self.accelerator.is_main_process and cfg.trackers:
            self.accelerator.init_trackers("srpo", config=cfg.model_dump(mode="json"))

    def _setup_guard(self, guard: Guard) -> GuardRunner:
        """The guard's runner: it renders the held-out prompts with the current policy, as the rollouts do.

        Under FSDP only the main process holds a kept candidate (the gathered state lives there);
        otherwise every process keeps its own copy, so each can put it back (with
        ``train.guard.snapshot_dir``, in a folder of its own under it).
        """
        gcfg, roll = guard.cfg, self.rollout_cfg
        render = policy_image_generator(self.policy, self.rollouts.height, self.rollouts.width,
                                        gcfg.num_steps or roll.num_steps, roll.shift,
                                        roll.guidance if gcfg.guidance is None else gcfg.guidance, gcfg.batch_size)
        procs = self.processes
        folder = gcfg.snapshot_dir
        if folder and procs.world > 1 and not procs.sharded:
            folder = str(Path(folder) / f"rank-{procs.rank}")
        return GuardRunner(guard, render, CandidateKeeper(folder), is_main=procs.is_main or not procs.sharded)

    @property
    def terms(self) -> MultiReward | None:
        """The reward as a multi-reward's terms, or None for one feature (or score-only) reward."""
        return self.reward if isinstance(self.reward, MultiReward) else None

    @property
    def reward_models(self) -> list[torch.nn.Module]:
        """The distinct reward models the update reads (one, or each a multi-reward's terms share)."""
        return self.terms.models if self.terms is not None else [self.reward]

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
            for model in self.reward_models:
                caches.enter_context(separate_cache(model, "_text_cache"))
            check = self.guard.maybe_check(step, self.cfg.steps, self.trainable_state)
        if check is not None and self.cfg.trackers:
            self.accelerator.log(self.guard.guard.scalars(check), step=step)
        return check

    # ---- data ---------------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """This process's rollout indices for ``step``.

        The global batch (``batch_size`` x processes) takes the next positions of a stream of
        seeded permutations (one per epoch); process r takes its r-th slice.
        """
        n, b = len(self.rollouts), self.cfg.batch_size
        first = step * b * self.processes.world + self.processes.rank * b
        picks = []
        for pos in range(first, first + b):
            epoch, offset = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(self.cfg.seed, "epoch", epoch)))
            picks.append(int(perm[offset]))
        return torch.tensor(picks)

    def global_positions(self, step: int) -> list[int]:
        first = step * self.cfg.batch_size * self.processes.world + self.processes.rank * self.cfg.batch_size
        return list(range(first, first + self.cfg.batch_size))

    def fresh_noise(self, step: int, tag: str, shape) -> torch.Tensor:
        """Noise [B,*shape] for this process's samples, seeded by (seed, step, tag, global position)."""
        seeds = [derived_seed(self.cfg.seed, step, tag, pos) for pos in self.global_positions(step)]
        return seeded_noise(shape, seeds).to(self.policy.device)

    def rollout_batch(self, step: int):
        """This process's rows of the rollout set for ``step``; their stored conditioning goes into the
        policy's prompt cache (the training process loads no text encoder)."""
        batch = self.rollouts.batch(self.batch_indices(step))
        self.policy.use_stored_conditioning(batch.prompts, batch.conditioning)
        return batch

    def clean_batch(self, step: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Prompts, x0 [B,C,h,w] and eps [B,C,h,w] for ``step``.

        Online: the stored rollouts are on-policy only before the first update; afterwards each
        batch is rolled out afresh by the current policy from fresh noise. Offline: stored x0
        (encoded real images) with fresh noise.
        """
        batch = self.rollout_batch(step)
        device = self.policy.device
        if self.rollouts.mode == "online" and step == 0:
            return batch.prompts, batch.x0.to(device), batch.eps.to(device)
        eps = self.fresh_noise(step, "eps", batch.eps.shape[1:])
        if self.rollouts.mode == "offline":
            return batch.prompts, batch.x0.to(device), eps
        cond = self.policy.encode_prompts(batch.prompts)
        x0 = self.policy.rollout(cond, eps, self.rollout_cfg.num_steps, self.rollout_cfg.shift,
                                 self.rollout_cfg.guidance)
        return batch.prompts, x0, eps

    def noise_levels(self, step: int = 0) -> list[tuple[int, float, float]]:
        """The method's ``num_injections`` levels (grid index, sigma, discount weight), earliest first.

        The same for every process at a given step (:meth:`srpo.training.methods.Method.noise_levels`).
        """
        return self.method.noise_levels(self, step)

    # ---- rewards ------------------------------------------------------------------------
    def text_sides(self, prompts: list[str], step: int) -> dict[str, torch.Tensor]:
        """Reward text features [B,D] for the raw prompts and with this step's control words."""
        cfg = self.cfg
        feats = {"plain": self.reward.text_features(prompts)}
        if cfg.positive_words:
            feats["pos"] = self.reward.text_features(with_control(cfg.positive_words[step % len(cfg.positive_words)], prompts))
        if cfg.negative_words:
            feats["neg"] = self.reward.text_features(with_control(cfg.negative_words[step % len(cfg.negative_words)], prompts))
        return feats

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The reward's image features [B, D] of decoded ``images`` [B,3,H,W] (differentiable)."""
        with self.policy.autocast():  # the reward tower in bf16 on GPUs, like the transformer and the VAE
            return self.reward.image_features(images).float()

    def branch_reward(self, branch: str, img: torch.Tensor, txt: dict[str, torch.Tensor], t: float) -> torch.Tensor:
        """Reward [B] on ``branch`` ("denoise" or "inversion") at level ``t`` of images with features ``img`` [B, D].

        k is read at the low-noise end of the branch's model step, where the authors index it: at
        ``t`` on the denoise branch (its step ends there), at ``t - d_sigma`` on the inversion branch
        (its step starts there).
        """
        cfg = self.cfg
        target, other = ("pos", "neg") if branch == "denoise" else ("neg", "pos")
        k = linear_k(self.k_level(branch, t), *self.grid_bounds, *(cfg.k_denoise if branch == "denoise" else cfg.k_inversion))
        r = semantic_reward(cfg.reward_form, img, txt["plain"], txt.get(target), txt.get(other), k, cfg.cfg_k)
        return self.reward.scale * r

    def k_level(self, branch: str, t: float) -> float:
        """Where a branch's k is read: ``t`` on the denoise branch, ``t - d_sigma`` on the inversion branch."""
        return t if branch == "denoise" else t - self.d_sigma

    def term_rewards(self, branch: str, images: torch.Tensor, prompts: list[str], step: int, t: float,
                     tag: str, rows: list | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A multi-reward on ``branch`` at level ``t``: (weighted sum [B], each term's value [B]).

        Each term reads its own words and k-schedule (k at :meth:`k_level`); an image-relative
        term's pixel noise is seeded by (seed, step, ``tag``, branch, row), the rows being the
        global sample positions unless ``rows`` names them (one per image).
        """
        rows = self.global_positions(step) if rows is None else rows

        def noise() -> torch.Tensor:  # [B, 3, H, W]
            seeds = [derived_seed(self.cfg.seed, step, "relative", tag, branch, row) for row in rows]
            return seeded_noise(images.shape[1:], seeds).to(images)

        with self.policy.autocast():
            total, parts = self.terms(images, prompts, branch=branch, step=step, sigma=self.k_level(branch, t),
                                      sigma_lo=self.grid_bounds[0], sigma_hi=self.grid_bounds[1], noise=noise)
        return total.float(), {name: part.float() for name, part in parts.items()}

    def group_velocity(self, group: tuple[str, ...], cond):
        """The velocity a micro-step of ``group`` calls: conditioned on the batch once per branch it stacks."""
        return self.policy.velocity_fn(cond.repeat(len(group)) if len(group) > 1 else cond, self.cfg.guidance)

    def recover_group(self, group: tuple[str, ...], x0: torch.Tensor, eps: torch.Tensor, t: float, velocity,
                      draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [G*B,C,h,w] of a micro-step's branches ``group`` (G of them) at level ``t``, stacked.

        One branch: one model call at batch B. Both (``fuse_branches``): one call at batch 2B, with
        ``velocity`` from :meth:`group_velocity`.
        """
        return self.method.recover_group(self, group, x0, eps, t, velocity, draw_noise)

    def recover(self, branch: str, x0: torch.Tensor, eps: torch.Tensor, t: float, velocity,
                draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [B,C,h,w] from the method's model step(s) at level ``t`` (with grad through v)."""
        return self.method.recover(self, branch, x0, eps, t, velocity, draw_noise)

    # ---- the update ---------------------------------------------------------------------
    def train_step(self, step: int) -> StepLog:
        """One update of the method (:meth:`srpo.training.methods.Method.update`)."""
        return self.method.update(self, step)

    def reward_update(self, step: int) -> StepLog:
        """Recover images at the method's levels and branches, decode, reward, backward; one optimizer step."""
        cfg, acc, start = self.cfg, self.accelerator, time.perf_counter()
        prompts, x0, eps = self.clean_batch(step)
        txt = self.text_sides(prompts, step) if self.terms is None else None
        cond = self.policy.encode_prompts(prompts)
        branches = self.method.branches(cfg)
        groups = [branches] if cfg.fuse_branches else [(b,) for b in branches]  # branches sharing a micro-step
        levels = self.noise_levels(step)
        velocities = {group: self.group_velocity(group, cond) for group in groups}  # once per update, not per level
        micro = [(j, level, group) for j, level in enumerate(levels) for group in groups]
        loss_terms = len(levels) * len(branches)  # the loss averages over levels and branches

        self.processes.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        rewards = {b: torch.zeros((), device=acc.device) for b in branches}
        term_names = [term.name for term in self.terms.terms] if self.terms is not None else []
        term_values = {name: torch.zeros((), device=acc.device) for name in term_names}  # denoise branch
        total_loss = torch.zeros((), device=acc.device)
        for n, (j, (_, t, weight), group) in enumerate(micro):
            draw = lambda: self.fresh_noise(step, f"draw{j}", x0.shape[1:])  # noqa: E731 (DRaFT-LV only)
            sync = n == len(micro) - 1  # all-reduce gradients once, after the last micro-step
            with self.processes.gradient_sync(sync):
                x0_hat = self.recover_group(group, x0, eps, t, velocities[group], draw)  # [G*B,C,h,w]
                images = self.policy.decode(x0_hat)  # [G*B, 3, H, W]
                if self.terms is None:  # one image-tower pass for the group, text features cached
                    per_branch = [self.branch_reward(branch, img, txt, t)
                                  for branch, img in zip(group, self.image_features(images).chunk(len(group)))]
                else:
                    per_branch = []
                    for branch, img in zip(group, images.chunk(len(group))):
                        r, parts = self.term_rewards(branch, img, prompts, step, t, f"level{j}")
                        per_branch.append(r)
                        if branch == "denoise":
                            for name, part in parts.items():
                                term_values[name] += part.detach().mean() / len(levels)
                loss = torch.zeros((), device=acc.device)
                for branch, r in zip(group, per_branch):  # r [B]
                    loss = loss + weight * reward_loss(r, cfg.loss, cfg.tau) / loss_terms
                    rewards[branch] += r.detach().mean() / len(levels)
                acc.backward(loss)  # one gradient-accumulation micro-step per level and branch (or pair)
            total_loss += loss.detach()
        stats = acc.reduce(torch.stack([total_loss, *rewards.values(), *term_values.values()]),
                           reduction="mean").tolist()
        loss_value, reward_values = stats[0], dict(zip(branches, stats[1:1 + len(branches)]))
        grad_norm, skipped = apply_gradients(self, step, stats)  # clip, the non-finite guard, the optimizer step
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward_values["denoise"], inversion_reward=reward_values.get("inversion"),
                       loss=loss_value, grad_norm=grad_norm, sigmas=[t for _, t, _ in levels], skipped=skipped,
                       seconds=seconds, images_per_second=len(prompts) * self.processes.world * loss_terms / seconds,
                       terms=dict(zip(term_names, stats[1 + len(branches):])) or None)

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
                        self.guard_check(step + 1)
                    every = self.cfg.checkpoint_every
                    due = every and ((step + 1) % every == 0 or step + 1 == self.cfg.steps or self.stopped)
                    if self.checkpoints and due and self.bad_in_a_row == 0:  # never replace a good one by a bad streak
                        self.save_checkpoint(step + 1)
                if self.stopped:
                    log.warning("guard stopped the run after %d of %d updates: %s", len(self.history),
                                self.cfg.steps, self.guard.guard.stopped)
        finally:
            bar.close()
        return self.history

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
    def save_checkpoint(self, step: int) -> Path | None:
        """Checkpoint after ``step`` updates (every rank calls; the main process writes)."""
        state = {"skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row, "history": [asdict(h) for h in self.history]}
        files = {}
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
        self.skipped, self.bad_in_a_row = state["skipped"], state["bad_in_a_row"]
        if self.guard is not None and "guard" in state:
            self.guard.load_state_dict(state["guard"], Path(state["folder"]) / GuardRunner.CANDIDATE_FILE)
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

