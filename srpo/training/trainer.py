"""The SRPO / Direct-Align trainer: one process or many (accelerate with DDP, or FSDP 2).

One update, for each process's batch of clean samples ``x0`` with their noise ``eps``:

    for each of n injected noise levels t (from the training grid, discount lambda(t)):
        denoise branch:   x0hat = Direct-Align(x0, eps, t)      reward towards positive words
        inversion branch: x0hat = inversion(x0, eps, t)         reward towards negative words
        each branch: image = VAE.decode(x0hat); loss = lambda * loss(r(image)); backward
        (fuse_branches: both branches as one batch of 2B, one forward, decode and backward)
    clip grad norm; AdamW step (skipped, and counted, if anything was non-finite)

Gradients flow through the reward's image tower and the VAE decoder into the transformer (or
its LoRA adapter) only.

Randomness is counter-based: every draw is seeded from ``(train.seed, step, global sample
index)``, so the result does not depend on how the global batch is split over processes, and a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from srpo.artifacts import RolloutSet
from srpo.config import RolloutConfig, TrainConfig, training_levels
from srpo.direct_align import (add_noise, both_branches_recover, denoise_recover, euler_sample_with_grad_tail,
                               inversion_recover, one_step_predict)
from srpo.io import atomic_write_text
from srpo.losses import reward_loss
from srpo.models.flux import FluxPolicy, cast_parameters
from srpo.noise import derived_seed, seeded_noise
from srpo.rewards.base import RewardModel
from srpo.schedules import linear_discount, linear_k, shifted_linspace_discount, sigma_schedule
from srpo.srp import semantic_reward, with_control
from srpo.training import checkpoint as ckpt
from srpo.training.lora import add_lora, save_lora

log = logging.getLogger(__name__)

FLUX_BLOCKS = ["FluxTransformerBlock", "FluxSingleTransformerBlock"]


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


class NonFiniteError(RuntimeError):
    """Too many consecutive updates had a non-finite loss or gradient."""


#: Version of what an update optimises for the same settings; a checkpoint of another is not resumed.
#: 2: k-schedules and the shifted discount read from the grid's clean end, antialiased reward resize
#: (2026-11-26); 1 (or none recorded): before.
OBJECTIVE_VERSION = 2

#: Settings a resumed run may change: its length and bookkeeping, not what or how it trains.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "checkpoint_dir", "keep_checkpoints", "max_bad_steps", "log_every",
                     "trackers", "num_processes"}


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


def make_accelerator(cfg: TrainConfig, cpu: bool):
    """An ``Accelerator`` for the config: processes, devices, DDP and trackers.

    FSDP is not accelerate's here: its plugin is ignored on CPU processes (gloo), so the trainer
    shards with FSDP 2 itself (:func:`shard_fsdp`), the same on CPUs and GPUs.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(cpu=cpu, log_with=cfg.trackers or None,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def shard_fsdp(transformer: torch.nn.Module, device: torch.device, world: int, param_dtype: str | None = None):
    """FSDP 2 (``fully_shard``) on every FLUX block, then on the whole transformer.

    Parameters are sharded over the ``world`` processes; ``param_dtype`` (bf16) gathers and
    computes in that dtype while shards and gradient reduction stay fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    mixed = MixedPrecisionPolicy(param_dtype=getattr(torch, param_dtype) if param_dtype else None,
                                 reduce_dtype=torch.float32 if param_dtype else None)
    for block in transformer.modules():
        if type(block).__name__ in FLUX_BLOCKS:
            fully_shard(block, mesh=mesh, mp_policy=mixed, reshard_after_forward=True)
    fully_shard(transformer, mesh=mesh, mp_policy=mixed, reshard_after_forward=True)
    return transformer


class SRPOTrainer:
    """Trains ``policy.transformer`` (full or LoRA) against ``reward`` on samples from ``rollouts``.

    ``setup`` happens in ``__init__``; then ``train()`` (resuming from ``checkpoint_dir`` when it
    holds a valid checkpoint) and ``save(out_dir)``.
    """

    def __init__(self, policy: FluxPolicy, reward: RewardModel, rollouts: RolloutSet, cfg: TrainConfig,
                 rollout_cfg: RolloutConfig, accelerator=None, checkpoint_dir: str | Path | None = None):
        if len(rollouts) == 0:
            raise ValueError("the rollout set is empty: nothing to train on")
        self.policy, self.reward, self.rollouts = policy, reward, rollouts
        self.cfg, self.rollout_cfg = cfg, rollout_cfg
        self.grid, self.d_sigma = training_levels(cfg)
        self.grid_bounds = float(self.grid.min()), float(self.grid.max())  # (sigma_lo, sigma_hi)
        self.sampler_sigmas = sigma_schedule(rollout_cfg.num_steps, rollout_cfg.shift)  # DRaFT baselines
        if cfg.method == "draft" and cfg.draft_steps > rollout_cfg.num_steps:
            raise ValueError(f"train.draft_steps {cfg.draft_steps} exceeds the rollout's {rollout_cfg.num_steps} "
                             "steps: use at most rollouts.num_steps (that is the full chain)")
        self.accelerator = accelerator or make_accelerator(cfg, cpu=policy.device.type == "cpu")
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.history: list[StepLog] = []
        self.bad_in_a_row = 0
        self.skipped = 0
        if cfg.checkpoint_every and self.checkpoint_dir is None:
            raise ValueError(f"train.checkpoint_every is {cfg.checkpoint_every} but no checkpoint folder is given: "
                             "set train.checkpoint_dir (or checkpoint_every: 0 for no checkpoints)")
        # The global generator drives LoRA dropout only (every other draw has its own seed): seeded
        # per process, so masks differ across processes and repeat across runs (CPU and CUDA).
        torch.manual_seed(derived_seed(cfg.seed, "global", self.rank))
        self._setup_model()

    # ---- setup --------------------------------------------------------------------------
    def _setup_model(self) -> None:
        cfg, transformer = self.cfg, self.policy.transformer
        if cfg.finetune == "lora":
            master = transformer.dtype
            if self.policy.frozen_dtype != master:  # frozen base weights in the compute dtype: half of fp32's memory
                cast_parameters(transformer, self.policy.frozen_dtype)
            self.params = add_lora(transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets,
                                   cfg.lora_dropout, seed=cfg.seed)
            for p in self.params:  # the adapter trains in the master dtype (fp32)
                p.data = p.data.to(master)
        else:
            transformer.requires_grad_(True)
            self.params = list(transformer.parameters())
        if cfg.vae_gradient_checkpointing:
            self.policy.pipe.vae.enable_gradient_checkpointing()
        self.reward.requires_grad_(False).eval()
        if self.sharded:  # FSDP 2 replaces the parameters by sharded ones: the optimizer takes those
            shard_fsdp(transformer, self.accelerator.device, self.world, cfg.fsdp_param_dtype)
            self.params = [p for p in transformer.parameters() if p.requires_grad]
        # fused AdamW: one kernel over all parameters (CPU and CUDA); FSDP's sharded
        # parameters take the multi-tensor path instead
        optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, betas=cfg.betas,
                                      weight_decay=cfg.weight_decay, fused=not self.sharded,
                                      foreach=None if self.sharded else False)
        self.scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        if self.sharded:
            module = transformer
            self.optimizer, self.scheduler = self.accelerator.prepare(optimizer, self.scheduler)
        else:
            module, self.optimizer, self.scheduler = self.accelerator.prepare(transformer, optimizer, self.scheduler)
        self.policy.denoiser = module  # forwards go through the DDP wrapper or the FSDP-sharded model
        if self.accelerator.is_main_process and cfg.trackers:
            self.accelerator.init_trackers("srpo", config=cfg.model_dump(mode="json"))

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def sharded(self) -> bool:
        """Whether the transformer is sharded with FSDP (``distributed: fsdp`` over several processes)."""
        return self.cfg.distributed == "fsdp" and self.world > 1

    def gradient_sync(self, sync: bool):
        """Context for one micro-step's backward: reduce gradients across processes only if ``sync``.

        FSDP reduces every micro-step anyway: skipping it would hold every parameter's gradient
        unsharded until the last backward (48 GB in fp32 for a fully fine-tuned FLUX.1).
        """
        if self.sharded:
            return nullcontext()
        return self.accelerator.no_sync(self.policy.denoiser) if not sync and self.world > 1 else nullcontext()

    # ---- data ---------------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """This process's rollout indices for ``step``.

        The global batch (``batch_size`` x processes) takes the next positions of a stream of
        seeded permutations (one per epoch); process r takes its r-th slice.
        """
        n, b = len(self.rollouts), self.cfg.batch_size
        first = step * b * self.world + self.rank * b
        picks = []
        for pos in range(first, first + b):
            epoch, offset = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(self.cfg.seed, "epoch", epoch)))
            picks.append(int(perm[offset]))
        return torch.tensor(picks)

    def global_positions(self, step: int) -> list[int]:
        first = step * self.cfg.batch_size * self.world + self.rank * self.cfg.batch_size
        return list(range(first, first + self.cfg.batch_size))

    def fresh_noise(self, step: int, tag: str, shape) -> torch.Tensor:
        """Noise [B,*shape] for this process's samples, seeded by (seed, step, tag, global position)."""
        seeds = [derived_seed(self.cfg.seed, step, tag, pos) for pos in self.global_positions(step)]
        return seeded_noise(shape, seeds).to(self.policy.device)

    def clean_batch(self, step: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Prompts, x0 [B,C,h,w] and eps [B,C,h,w] for ``step``.

        Online: the stored rollouts are on-policy only before the first update; afterwards each
        batch is rolled out afresh by the current policy from fresh noise. Offline: stored x0
        (encoded real images) with fresh noise.
        """
        batch = self.rollouts.batch(self.batch_indices(step))
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
        """``num_injections`` levels (grid index, sigma, discount weight), earliest first.

        The same for every process at a given step. DRaFT baselines ignore the grid: DRaFT-LV
        draws ``num_injections`` noises at the last sampler level, DRaFT-K makes one pass
        through the sampler's tail.
        """
        n = self.cfg.num_injections
        if self.cfg.method == "draft_lv":
            return [(0, float(self.sampler_sigmas[-2]), 1.0)] * n
        if self.cfg.method == "draft":
            return [(0, 1.0, 1.0)]
        g = torch.Generator().manual_seed(derived_seed(self.cfg.seed, "levels", step))
        idx = torch.randperm(len(self.grid), generator=g)[:n].sort().values
        sigmas = self.grid[idx]
        if self.cfg.discount == "linear":
            weights = linear_discount(sigmas, *self.grid_bounds, self.cfg.discount_floor)
        elif self.cfg.discount == "shifted_linspace":
            weights = shifted_linspace_discount(sigmas, *self.grid_bounds, self.cfg.shift, self.cfg.discount_floor)
        else:
            weights = torch.ones(n)
        return [(int(i), float(s), float(w)) for i, s, w in zip(idx, sigmas, weights)]

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
        if branch == "denoise":
            k = linear_k(t, *self.grid_bounds, *cfg.k_denoise)
        else:
            k = linear_k(t - self.d_sigma, *self.grid_bounds, *cfg.k_inversion)
        r = semantic_reward(cfg.reward_form, img, txt["plain"], txt.get(target), txt.get(other), k, cfg.cfg_k)
        return self.reward.scale * r

    def group_velocity(self, group: tuple[str, ...], cond):
        """The velocity a micro-step of ``group`` calls: conditioned on the batch once per branch it stacks."""
        return self.policy.velocity_fn(cond.repeat(len(group)) if len(group) > 1 else cond, self.cfg.guidance)

    def recover_group(self, group: tuple[str, ...], x0: torch.Tensor, eps: torch.Tensor, t: float, velocity,
                      draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [G*B,C,h,w] of a micro-step's branches ``group`` (G of them) at level ``t``, stacked.

        One branch: one model call at batch B. Both (``fuse_branches``): one call at batch 2B, with
        ``velocity`` from :meth:`group_velocity`.
        """
        if group == ("denoise", "inversion"):
            return torch.cat(both_branches_recover(velocity, x0, eps, t, self.d_sigma))
        return self.recover(group[0], x0, eps, t, velocity, draw_noise)

    def recover(self, branch: str, x0: torch.Tensor, eps: torch.Tensor, t: float, velocity,
                draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [B,C,h,w] from model step(s) at level ``t`` (with grad through v)."""
        method = self.cfg.method
        if method == "refl":
            return one_step_predict(velocity, add_noise(x0, eps, t), t)
        if method == "draft_lv":
            return one_step_predict(velocity, add_noise(x0, draw_noise(), t), t)
        if method == "draft":
            return euler_sample_with_grad_tail(velocity, eps, self.sampler_sigmas.to(eps), self.cfg.draft_steps)
        if branch == "denoise":
            return denoise_recover(velocity, x0, eps, t, self.d_sigma)
        return inversion_recover(velocity, x0, eps, t, self.d_sigma)

    # ---- the update ---------------------------------------------------------------------
    def train_step(self, step: int) -> StepLog:
        cfg, acc, start = self.cfg, self.accelerator, time.perf_counter()
        prompts, x0, eps = self.clean_batch(step)
        txt = self.text_sides(prompts, step)
        cond = self.policy.encode_prompts(prompts)
        branches = ("denoise", "inversion") if cfg.inversion else ("denoise",)
        groups = [branches] if cfg.fuse_branches else [(b,) for b in branches]  # branches sharing a micro-step
        levels = self.noise_levels(step)
        velocities = {group: self.group_velocity(group, cond) for group in groups}  # once per update, not per level
        micro = [(j, level, group) for j, level in enumerate(levels) for group in groups]
        terms = len(levels) * len(branches)  # the loss averages over levels and branches

        self.policy.denoiser.train()
        self.optimizer.zero_grad(set_to_none=True)
        rewards = {b: torch.zeros((), device=acc.device) for b in branches}
        total_loss = torch.zeros((), device=acc.device)
        for n, (j, (_, t, weight), group) in enumerate(micro):
            draw = lambda: self.fresh_noise(step, f"draw{j}", x0.shape[1:])  # noqa: E731 (DRaFT-LV only)
            sync = n == len(micro) - 1  # all-reduce gradients once, after the last micro-step
            with self.gradient_sync(sync):
                x0_hat = self.recover_group(group, x0, eps, t, velocities[group], draw)  # [G*B,C,h,w]
                features = self.image_features(self.policy.decode(x0_hat)).chunk(len(group))  # G x [B, D]
                loss = torch.zeros((), device=acc.device)
                for branch, img in zip(group, features):
                    r = self.branch_reward(branch, img, txt, t)  # [B]
                    loss = loss + weight * reward_loss(r, cfg.loss, cfg.tau) / terms
                    rewards[branch] += r.detach().mean() / len(levels)
                acc.backward(loss)  # one gradient-accumulation micro-step per level and branch (or pair)
            total_loss += loss.detach()
        grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm) if grad_norm is not None else 0.0
        stats = acc.reduce(torch.stack([total_loss, *rewards.values()]), reduction="mean").tolist()
        loss_value, reward_values = stats[0], dict(zip(branches, stats[1:]))
        skipped = not all(math.isfinite(v) for v in (*stats, grad_norm))  # rewards, loss and gradient
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.bad_in_a_row += 1
            log.warning("step %d: non-finite reward, loss or gradient, update skipped (%d in a row, %d in all)",
                        step, self.bad_in_a_row, self.skipped)
            if self.bad_in_a_row >= cfg.max_bad_steps:
                raise NonFiniteError(f"{self.bad_in_a_row} updates in a row had a non-finite reward, loss or gradient; "
                                     "the last good checkpoint is kept. Check the learning rate, dtype and reward "
                                     "scale, then resume")
        else:
            self.optimizer.step()
            self.scheduler.step()
            self.bad_in_a_row = 0
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward_values["denoise"], inversion_reward=reward_values.get("inversion"),
                       loss=loss_value, grad_norm=grad_norm, sigmas=[t for _, t, _ in levels], skipped=skipped,
                       seconds=seconds, images_per_second=len(prompts) * self.world * terms / seconds)

    def train(self, on_step: Callable[[StepLog], None] | None = None) -> list[StepLog]:
        """Run until ``cfg.steps`` updates are done, resuming from a checkpoint when there is one."""
        from tqdm.auto import tqdm

        start = self.resume()
        bar = tqdm(total=self.cfg.steps, initial=start, desc="srpo", unit="step",
                   disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        try:
            for step in range(start, self.cfg.steps):
                entry = self.train_step(step)
                self.history.append(entry)
                self._report(entry, bar)
                if on_step is not None:
                    on_step(entry)
                every = self.cfg.checkpoint_every
                due = every and ((step + 1) % every == 0 or step + 1 == self.cfg.steps)
                if self.checkpoint_dir and due and self.bad_in_a_row == 0:  # never replace a good one by a bad streak
                    self.save_checkpoint(step + 1)
        finally:
            bar.close()
        return self.history

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
    def full_state(self) -> dict[str, torch.Tensor]:
        """The transformer's whole state dict, FSDP shards gathered (every rank must call this)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.policy.denoiser, options=StateDictOptions(full_state_dict=True,
                                                                                        cpu_offload=True))
            if self.accelerator.device.type == "cpu":  # gathered in place, not copied: own the memory
                state = {k: v.clone() for k, v in state.items()}
            return state
        return self.accelerator.get_state_dict(self.policy.denoiser)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters by name (LoRA: the adapter only), gathered for saving."""
        state = self.full_state()
        if self.cfg.finetune == "lora":
            state = {k: v for k, v in state.items() if "lora_" in k}
        return state

    def save_checkpoint(self, step: int) -> Path | None:
        """Checkpoint after ``step`` updates (main process writes; every rank's RNG state included)."""
        acc = self.accelerator
        model_state = self.trainable_state()
        optim_state = _fsdp_optim_state(self) if self.sharded else self.optimizer.state_dict()
        rng_states = [rng_state()]
        if self.world > 1:
            from accelerate.utils import gather_object

            rng_states = gather_object(rng_states)  # every rank's state, in rank order
        path = None
        if acc.is_main_process:
            state = {"step": step, "world_size": self.world, "skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row,
                     "objective_version": OBJECTIVE_VERSION,
                     "history": [asdict(h) for h in self.history], "config": self.cfg.model_dump(mode="json")}
            files = {"trainable.safetensors": ckpt.save_tensors(model_state),
                     "optimizer.pt": ckpt.save_torch(optim_state),
                     "scheduler.pt": ckpt.save_torch(self.scheduler.state_dict()),
                     **{f"rng-rank{r}.pt": ckpt.save_torch(s) for r, s in enumerate(rng_states)},
                     ckpt.STATE: ckpt.save_json(state)}
            path = ckpt.write_checkpoint(self.checkpoint_dir, step, files, self.cfg.keep_checkpoints)
            log.info("saved checkpoint %s", path)
        acc.wait_for_everyone()
        return path

    def find_checkpoint(self) -> tuple[Path, dict] | None:
        """The newest valid checkpoint, chosen by the main process (it alone checks the checksums).

        Every process resumes from that folder; one that cannot read it raises: the checkpoint
        folder must be shared by all nodes.
        """
        found = ckpt.latest_valid(self.checkpoint_dir) if self.accelerator.is_main_process else None
        if self.world == 1:
            return found
        from accelerate.utils import broadcast_object_list

        chosen = broadcast_object_list([str(found[0]) if found else None], from_process=0)[0]
        if chosen is None:
            return None
        folder = Path(chosen)
        if found is not None:
            return found
        try:
            return folder, ckpt.read_state(folder)
        except ckpt.CorruptCheckpoint as err:
            raise RuntimeError(f"process {self.rank} cannot read checkpoint {folder}, which the main process resumes "
                               f"from ({err}): train.checkpoint_dir must be a folder every node shares") from err

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

    def resume(self) -> int:
        """Load the newest valid checkpoint; returns the step to continue from (0 if none)."""
        if self.checkpoint_dir is None:
            return 0
        found = self.find_checkpoint()
        if found is None:
            return 0
        folder, state = found
        self.check_resumable(folder, state)
        if state["world_size"] != self.world:
            raise RuntimeError(f"{folder} was written by {state['world_size']} processes, this run has {self.world}: "
                               "resume with the same number of processes (the data order depends on it)")
        from safetensors.torch import load_file

        trained = load_file(str(folder / "trainable.safetensors"))
        if self.sharded:  # every rank reads the full tensors and keeps its shards
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            missing, unexpected = set_model_state_dict(self.policy.denoiser, trained,
                                                       options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            missing, unexpected = self.accelerator.unwrap_model(self.policy.denoiser).load_state_dict(trained,
                                                                                                     strict=False)
        if unexpected or (self.cfg.finetune == "full" and missing):
            raise ckpt.CorruptCheckpoint(f"{folder}: weights do not fit this model (missing {missing[:3]}, "
                                         f"unexpected {unexpected[:3]}): was it written with another config?")
        if self.sharded:  # the main process reads the full state and sends each rank its shards
            optim_state = ckpt.load_torch(folder / "optimizer.pt") if self.accelerator.is_main_process else {}
            _fsdp_load_optim_state(self, optim_state)
        else:
            self.optimizer.load_state_dict(ckpt.load_torch(folder / "optimizer.pt"))
        self.scheduler.load_state_dict(ckpt.load_torch(folder / "scheduler.pt"))
        set_rng_state(ckpt.load_torch(folder / f"rng-rank{self.rank}.pt"))
        self.history = [StepLog(**h) for h in state["history"]]
        self.skipped, self.bad_in_a_row = state["skipped"], state["bad_in_a_row"]
        log.info("resumed from %s at step %d", folder, state["step"])
        return int(state["step"])

    # ---- output -------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Full: the tuned transformer as a diffusers folder. LoRA: ``pytorch_lora_weights.safetensors``.

        Both with ``training_log.json``; written by the main process.
        """
        out_dir = Path(out_dir)
        acc = self.accelerator
        state = self.full_state()  # every rank takes part in gathering FSDP shards
        if acc.is_main_process:
            model = acc.unwrap_model(self.policy.denoiser)
            if self.cfg.finetune == "lora":
                save_lora(model, out_dir, state)
            else:  # diffusers' save_pretrained reads model.state_dict(), which holds shards under FSDP
                save_diffusers_model(model, state, out_dir)
            atomic_write_text(out_dir / "training_log.json", json.dumps({
                "config": self.cfg.model_dump(mode="json"),
                "d_sigma": self.d_sigma,
                "processes": self.world,
                "strategy": "fsdp" if self.sharded else "ddp" if self.world > 1 else "single process",
                "skipped_updates": self.skipped,
                "history": [asdict(h) for h in self.history],
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


def _fsdp_optim_state(trainer: SRPOTrainer) -> dict:
    """Full optimizer state of an FSDP-2 model (all ranks take part; rank 0 gets it all)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(trainer.policy.denoiser, trainer.optimizer.optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _fsdp_load_optim_state(trainer: SRPOTrainer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(trainer.policy.denoiser, trainer.optimizer.optimizer, state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
