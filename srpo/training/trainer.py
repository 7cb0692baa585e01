"""The SRPO / Direct-Align trainer (single process).

One update, for a batch of clean samples ``x0`` with their noise ``eps``:

    for each of n injected noise levels t (from the training grid, discount lambda(t)):
        denoise branch:   x0hat = Direct-Align(x0, eps, t)      reward towards positive words
        inversion branch: x0hat = inversion(x0, eps, t)         reward towards negative words
        each branch: image = VAE.decode(x0hat); loss = lambda * loss(r(image)); backward
    clip grad norm; AdamW step

Gradients flow through the reward's image tower and the VAE decoder into the transformer only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from srpo.artifacts import RolloutSet
from srpo.config import RolloutConfig, TrainConfig, training_levels
from srpo.direct_align import (add_noise, denoise_recover, euler_sample_with_grad_tail, inversion_recover,
                               one_step_predict)
from srpo.io import atomic_write_text
from srpo.losses import reward_loss
from srpo.models.flux import FluxPolicy
from srpo.rewards.base import RewardModel
from srpo.schedules import linear_discount, linear_k, shifted_linspace_discount, sigma_schedule
from srpo.srp import semantic_reward, with_control

log = logging.getLogger(__name__)


@dataclass
class StepLog:
    """What one update did; the trainer keeps one per step."""

    step: int
    reward: float  # mean denoise-branch reward (scaled like the reward model's score)
    inversion_reward: float | None
    loss: float
    grad_norm: float
    sigmas: list[float]
    skipped: bool
    seconds: float
    images_per_second: float


class NonFiniteError(RuntimeError):
    """Too many consecutive updates had a non-finite loss or gradient."""


class SRPOTrainer:
    """Trains ``policy.transformer`` against ``reward`` on clean samples from ``rollouts``."""

    def __init__(self, policy: FluxPolicy, reward: RewardModel, rollouts: RolloutSet,
                 cfg: TrainConfig, rollout_cfg: RolloutConfig, max_bad_steps: int = 5):
        if len(rollouts) == 0:
            raise ValueError("the rollout set is empty: nothing to train on")
        self.policy, self.reward, self.rollouts = policy, reward, rollouts
        self.cfg, self.rollout_cfg = cfg, rollout_cfg
        self.grid, self.d_sigma = training_levels(cfg)
        self.sampler_sigmas = sigma_schedule(rollout_cfg.num_steps, rollout_cfg.shift)  # DRaFT baselines
        if cfg.method == "draft" and cfg.draft_steps > rollout_cfg.num_steps:
            raise ValueError(f"train.draft_steps {cfg.draft_steps} exceeds the rollout's {rollout_cfg.num_steps} "
                             "steps: use at most rollouts.num_steps (that is the full chain)")
        self.max_bad_steps = max_bad_steps
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.params = [p for p in policy.transformer.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.history: list[StepLog] = []
        self.bad_in_a_row = 0
        self.skipped = 0

    # ---- data ---------------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of ``step``'s batch: epochs of seeded permutations, consumed in order."""
        n, b = len(self.rollouts), self.cfg.batch_size
        picks = []
        for pos in range(step * b, step * b + b):
            epoch, offset = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch))
            picks.append(int(perm[offset]))
        return torch.tensor(picks)

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
        eps = torch.randn(batch.eps.shape, generator=self.generator).to(device)
        if self.rollouts.mode == "offline":
            return batch.prompts, batch.x0.to(device), eps
        cond = self.policy.encode_prompts(batch.prompts)
        x0 = self.policy.rollout(cond, eps, self.rollout_cfg.num_steps, self.rollout_cfg.shift,
                                 self.rollout_cfg.guidance)
        return batch.prompts, x0, eps

    def noise_levels(self) -> list[tuple[int, float, float]]:
        """``num_injections`` levels (grid index, sigma, discount weight), earliest first.

        DRaFT baselines ignore the grid: DRaFT-LV draws ``num_injections`` noises at the last
        sampler level, DRaFT-K makes one pass through the sampler's tail.
        """
        n = self.cfg.num_injections
        if self.cfg.method == "draft_lv":
            return [(0, float(self.sampler_sigmas[-2]), 1.0)] * n
        if self.cfg.method == "draft":
            return [(0, 1.0, 1.0)]
        idx = torch.randperm(len(self.grid), generator=self.generator)[:n].sort().values
        sigmas = self.grid[idx]
        if self.cfg.discount == "linear":
            weights = linear_discount(sigmas, float(self.grid.min()), float(self.grid.max()), self.cfg.discount_floor)
        elif self.cfg.discount == "shifted_linspace":
            weights = shifted_linspace_discount(n, self.cfg.shift, self.cfg.discount_floor)
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

    def branch_reward(self, branch: str, images: torch.Tensor, txt: dict[str, torch.Tensor],
                      grid_index: int) -> torch.Tensor:
        """Reward [B] of decoded ``images`` on ``branch`` ("denoise" or "inversion")."""
        cfg = self.cfg
        img = self.reward.image_features(images)  # [B, D]
        target, other = ("pos", "neg") if branch == "denoise" else ("neg", "pos")
        k_range = cfg.k_denoise if branch == "denoise" else cfg.k_inversion
        k = linear_k(grid_index, len(self.grid), *k_range)
        r = semantic_reward(cfg.reward_form, img, txt["plain"], txt.get(target), txt.get(other), k, cfg.cfg_k)
        return self.reward.scale * r

    def recover(self, branch: str, x0: torch.Tensor, eps: torch.Tensor, t: float, velocity) -> torch.Tensor:
        """x0hat [B,C,h,w] from one model step at level ``t`` (with grad through v)."""
        if self.cfg.method == "refl":
            return one_step_predict(velocity, add_noise(x0, eps, t), t)
        if self.cfg.method == "draft_lv":
            fresh = torch.randn(eps.shape, generator=self.generator).to(eps)
            return one_step_predict(velocity, add_noise(x0, fresh, t), t)
        if self.cfg.method == "draft":
            return euler_sample_with_grad_tail(velocity, eps, self.sampler_sigmas.to(eps), self.cfg.draft_steps)
        if branch == "denoise":
            return denoise_recover(velocity, x0, eps, t, self.d_sigma)
        return inversion_recover(velocity, x0, eps, t, self.d_sigma)

    # ---- the update ---------------------------------------------------------------------
    def train_step(self, step: int) -> StepLog:
        cfg, start = self.cfg, time.perf_counter()
        prompts, x0, eps = self.clean_batch(step)
        txt = self.text_sides(prompts, step)
        velocity = self.policy.velocity_fn(self.policy.encode_prompts(prompts), cfg.guidance)
        branches = ["denoise", "inversion"] if cfg.inversion else ["denoise"]
        levels = self.noise_levels()
        micro_steps = len(levels) * len(branches)

        self.policy.transformer.train()
        self.optimizer.zero_grad(set_to_none=True)
        rewards: dict[str, list[float]] = {b: [] for b in branches}
        total_loss = 0.0
        for grid_index, t, weight in levels:
            for branch in branches:
                x0_hat = self.recover(branch, x0, eps, t, velocity)
                r = self.branch_reward(branch, self.policy.decode(x0_hat), txt, grid_index)  # [B]
                loss = weight * reward_loss(r, cfg.loss, cfg.tau) / micro_steps
                loss.backward()  # one gradient-accumulation micro-step per level and branch
                rewards[branch].append(r.detach().mean().item())
                total_loss += loss.item()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
        skipped = not (math.isfinite(total_loss) and math.isfinite(grad_norm))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.bad_in_a_row += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, self.bad_in_a_row)
            if self.bad_in_a_row >= self.max_bad_steps:
                raise NonFiniteError(f"{self.bad_in_a_row} updates in a row had non-finite loss or gradients "
                                     "(check the learning rate, dtype and reward scale)")
        else:
            self.optimizer.step()
            self.bad_in_a_row = 0
        seconds = time.perf_counter() - start
        inv = rewards.get("inversion")
        return StepLog(step=step, reward=sum(rewards["denoise"]) / len(levels),
                       inversion_reward=sum(inv) / len(inv) if inv else None, loss=total_loss,
                       grad_norm=grad_norm, sigmas=[t for _, t, _ in levels], skipped=skipped,
                       seconds=seconds, images_per_second=len(prompts) * micro_steps / seconds)

    def train(self, on_step=None) -> list[StepLog]:
        """Run exactly ``cfg.steps`` updates; ``on_step(StepLog)`` is called after each."""
        for step in range(len(self.history), self.cfg.steps):
            entry = self.train_step(step)
            self.history.append(entry)
            if step % self.cfg.log_every == 0 or step == self.cfg.steps - 1:
                log.info("step %d/%d reward %.4f loss %.4f |g| %.3g %.2f s/step %.1f img/s%s", step + 1,
                         self.cfg.steps, entry.reward, entry.loss, entry.grad_norm, entry.seconds,
                         entry.images_per_second, " (skipped)" if entry.skipped else "")
            if on_step is not None:
                on_step(entry)
        return self.history

    def save(self, out_dir: str | Path) -> Path:
        """The tuned transformer (diffusers folder, safetensors) plus ``training_log.json``."""
        out_dir = Path(out_dir)
        self.policy.save_transformer(out_dir)
        atomic_write_text(out_dir / "training_log.json", json.dumps({
            "config": self.cfg.model_dump(mode="json"),
            "d_sigma": self.d_sigma,
            "skipped_updates": self.skipped,
            "history": [asdict(h) for h in self.history],
        }, indent=2))
        return out_dir
