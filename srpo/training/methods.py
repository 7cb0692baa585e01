"""The training methods: how an update picks its noise levels and recovers images to reward.

One :class:`Method` per ``train.method`` name, chosen once by the trainer (:func:`method_for`):

- ``srpo`` / ``direct_align``: Direct-Align recovery (one model step, then the closed form) at
  levels drawn from the training grid; ``srpo`` may add the inversion branch.
- ``refl``: one-step prediction from the noised sample at grid levels.
- ``draft_lv``: one-step prediction at the sampler's last level, with fresh noise per draw.
- ``draft``: backpropagate through the last ``draft_steps`` sampler steps from the rollout noise.
- ``grpo``: policy gradient (Flow-GRPO / DanceGRPO) over groups of SDE samples; owns its whole update
  (:class:`GRPO`, maths in :mod:`srpo.grpo`) and is the one method that takes score-only rewards.

A method reads the trainer's grid, sampler schedule and config. :meth:`Method.update` is the
whole update of a step: every method here returns the trainer's recover-decode-reward update
(:meth:`~srpo.training.trainer.SRPOTrainer.reward_update`), which calls back into
:meth:`noise_levels`, :meth:`branches` and :meth:`recover`; a method that trains otherwise
(a policy gradient over sampled chains) overrides :meth:`update` instead.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from srpo import grpo
from srpo.noise import derived_seed, seeded_noise
from srpo.rewards.scores import is_score_only

from srpo.direct_align import (add_noise, both_branches_recover, denoise_recover, euler_sample_with_grad_tail,
                               inversion_recover, one_step_predict)
from srpo.schedules import linear_discount, shifted_linspace_discount

if TYPE_CHECKING:
    from srpo.config import RolloutConfig, TrainConfig
    from srpo.training.trainer import SRPOTrainer, StepLog

log = logging.getLogger(__name__)
#: (grid index, sigma, discount weight) of one injected noise level.
Level = tuple[int, float, float]


class Method:
    """A training method (the base: Direct-Align's denoise branch at grid levels)."""

    name = "direct_align"
    has_inversion = False  # whether the inversion branch (train.inversion) belongs to this method

    def check(self, cfg: "TrainConfig", rollout_cfg: "RolloutConfig") -> None:
        """Refuse settings this method cannot run with these rollouts (before any model work)."""

    def branches(self, cfg: "TrainConfig") -> tuple[str, ...]:
        """The branches each level trains: ("denoise",), and "inversion" where the method has it and it is on."""
        return ("denoise", "inversion") if self.has_inversion and cfg.inversion else ("denoise",)

    def noise_levels(self, trainer: "SRPOTrainer", step: int) -> list[Level]:
        """``num_injections`` levels drawn from the training grid without repeats, earliest first, discounted.

        Seeded by (seed, step): the same for every process at a given step.
        """
        cfg, n = trainer.cfg, trainer.cfg.num_injections
        g = torch.Generator().manual_seed(derived_seed(cfg.seed, "levels", step))
        idx = torch.randperm(len(trainer.grid), generator=g)[:n].sort().values
        sigmas = trainer.grid[idx]
        if cfg.discount == "linear":
            weights = linear_discount(sigmas, *trainer.grid_bounds, cfg.discount_floor)
        elif cfg.discount == "shifted_linspace":
            weights = shifted_linspace_discount(sigmas, *trainer.grid_bounds, cfg.shift, cfg.discount_floor)
        else:
            weights = torch.ones(n)
        return [(int(i), float(s), float(w)) for i, s, w in zip(idx, sigmas, weights)]

    def recover(self, trainer: "SRPOTrainer", branch: str, x0: torch.Tensor, eps: torch.Tensor, t: float,
                velocity, draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [B,C,h,w] of ``branch`` at level ``t`` (with grad through the velocity)."""
        if branch == "denoise":
            return denoise_recover(velocity, x0, eps, t, trainer.d_sigma)
        return inversion_recover(velocity, x0, eps, t, trainer.d_sigma)

    def recover_group(self, trainer: "SRPOTrainer", group: tuple[str, ...], x0: torch.Tensor, eps: torch.Tensor,
                      t: float, velocity, draw_noise: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """x0hat [G*B,C,h,w] of a micro-step's branches ``group`` stacked (one branch: :meth:`recover`)."""
        if group == ("denoise", "inversion"):
            return torch.cat(both_branches_recover(velocity, x0, eps, t, trainer.d_sigma))
        return trainer.recover(group[0], x0, eps, t, velocity, draw_noise)

    def update(self, trainer: "SRPOTrainer", step: int) -> "StepLog":
        """One whole update: recover images at this method's levels, reward them, one optimizer step."""
        if is_score_only(trainer.reward):
            raise ValueError(f"train.method {trainer.cfg.method!r} backpropagates through the reward, but the reward "
                             "is score-only: use train.method: grpo, or a CLIP-style reward")
        return trainer.reward_update(step)


class SRPO(Method):
    """Direct-Align with the optional inversion branch (rewarded towards the negative words)."""

    name = "srpo"
    has_inversion = True


class ReFL(Method):
    """One-step prediction ``x0hat = x_t - t * v`` from ``x0`` noised to a grid level."""

    name = "refl"

    def recover(self, trainer, branch, x0, eps, t, velocity, draw_noise=None):
        return one_step_predict(velocity, add_noise(x0, eps, t), t)


class DraftLV(Method):
    """DRaFT-LV: ``num_injections`` one-step predictions at the sampler's last level, each from fresh noise."""

    name = "draft_lv"

    def noise_levels(self, trainer, step):
        return [(0, float(trainer.sampler_sigmas[-2]), 1.0)] * trainer.cfg.num_injections

    def recover(self, trainer, branch, x0, eps, t, velocity, draw_noise=None):
        return one_step_predict(velocity, add_noise(x0, draw_noise(), t), t)


class Draft(Method):
    """DRaFT-K: one pass through the sampler from the rollout noise, with grad through its last ``draft_steps``."""

    name = "draft"

    def check(self, cfg, rollout_cfg):
        if cfg.draft_steps > rollout_cfg.num_steps:
            raise ValueError(f"train.draft_steps {cfg.draft_steps} exceeds the rollout's {rollout_cfg.num_steps} "
                             "steps: use at most rollouts.num_steps (that is the full chain)")

    def noise_levels(self, trainer, step):
        return [(0, 1.0, 1.0)]

    def recover(self, trainer, branch, x0, eps, t, velocity, draw_noise=None):
        return euler_sample_with_grad_tail(velocity, eps, trainer.sampler_sigmas.to(eps), trainer.cfg.draft_steps)


@dataclass
class Groups:
    """One update's sampled groups on this process: B prompts x G members, flattened to N = B*G."""

    prompts: list[str]  # N prompts, each prompt's G members consecutive
    latents: torch.Tensor  # [T+1, N, C, h, w] the SDE chain, latents[0] the initial noise
    log_probs: torch.Tensor  # [T, N] each step's log-probability under the sampling policy
    rewards: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N] normalised within each group
    sigmas: torch.Tensor  # [T+1] the sampler's levels
    stds: torch.Tensor  # [T] sigma_t of each step
    steps: list[int]  # the steps this update trains on


class GRPO(Method):
    """Flow-GRPO / DanceGRPO: sample G images per prompt with the SDE, reward them, clipped policy gradient.

    An update (all of it seeded by (train.seed, step, global sample index, member, sampler step),
    so it is the same whatever the process count, and a resumed run continues exactly):

    1. :meth:`sample`: for each of this process's B prompts, G chains of the marginal-preserving
       SDE on the rollout schedule (no grad, model in eval mode), keeping every latent and each
       step's log-probability; the G images are decoded and scored (CLIP-style rewards with the
       run's control words and reward form, read at the lowest grid level's k; or a score-only
       reward's ``score``), and the rewards normalised within each group.
    2. :meth:`optimise`: ``inner_epochs`` optimizer steps; each recomputes the log-probabilities of
       the chosen steps with grad (micro-steps of ``micro_batch`` samples per step, accumulated,
       gradients synchronised once) and minimises the clipped objective, plus ``kl`` times the KL to
       the frozen reference. The first epoch's ratio is exactly 1 (its old log-probabilities are
       its own, detached: on-policy), later epochs are measured against them.
    """

    name = "grpo"

    def check(self, cfg, rollout_cfg):
        g = cfg.grpo
        if rollout_cfg.num_steps < 2:
            raise ValueError(f"rollouts.num_steps {rollout_cfg.num_steps} leaves grpo no stochastic step (the step "
                             "into t = 0 is deterministic): use at least 2 sampler steps")
        if g.num_train_steps is not None and g.steps != "all" and g.num_train_steps > rollout_cfg.num_steps - 1:
            raise ValueError(f"train.grpo.num_train_steps {g.num_train_steps} exceeds the {rollout_cfg.num_steps - 1} "
                             "stochastic sampler steps: use at most rollouts.num_steps - 1, or steps: all")
        if g.kl > 0 and cfg.finetune == "full" and cfg.distributed == "fsdp" and cfg.num_processes > 1:
            raise ValueError("train.grpo.kl > 0 with full fine-tuning under FSDP would keep an unsharded frozen copy "
                             "on every process: use finetune: lora (the reference is the base, adapters off), "
                             "distributed: ddp, or kl: 0")

    def noise_levels(self, trainer, step):
        return []  # GRPO trains on sampler steps, not injected levels

    # ---- sampling ------------------------------------------------------------------------
    def sample(self, trainer: "SRPOTrainer", step: int) -> Groups:
        """This process's groups for ``step`` (no grad): chains, log-probs, rewards, advantages, steps."""
        cfg, g, policy = trainer.cfg, trainer.cfg.grpo, trainer.policy
        prompts = trainer.rollout_batch(step).prompts  # B
        positions = trainer.global_positions(step)
        members = [(pos, j) for pos in positions for j in range(g.group_size)]  # N = B*G
        group_prompts = [p for p in prompts for _ in range(g.group_size)]
        shape = trainer.rollouts.x0.shape[1:]  # [C, h, w]
        start_seeds = grpo.group_seeds([[derived_seed(cfg.seed, step, "grpo-eps", pos, j) for j in range(g.group_size)]
                                        for pos in positions], g.shared_noise)
        eps = seeded_noise(shape, start_seeds).to(policy.device)  # [N, C, h, w]
        sigmas = trainer.sampler_sigmas.to(eps)
        stds = grpo.sde_sigmas(sigmas, g.noise_level, g.noise_schedule)  # [T]

        def noise(k: int) -> torch.Tensor:  # [N, C, h, w] the SDE noise of sampler step k
            return seeded_noise(shape, [derived_seed(cfg.seed, step, "grpo-sde", pos, j, k)
                                        for pos, j in members]).to(eps)

        module = trainer.processes.module
        was_training = module.training
        try:
            module.eval()
            velocity = policy.velocity_fn(policy.encode_prompts(group_prompts), cfg.guidance)
            latents, log_probs = grpo.sde_sample(velocity, eps, sigmas, stds, noise, g.log_prob)
        finally:
            module.train(was_training)
        rewards = self.score(trainer, latents[-1], group_prompts, step)  # [N]
        advantages = grpo.group_advantages(rewards, g.group_size, g.advantage_eps, g.advantage_clip)
        picker = torch.Generator().manual_seed(derived_seed(cfg.seed, "grpo-steps", step))  # the same on every process
        steps = grpo.train_steps(grpo.stochastic_steps(sigmas, stds), g.steps, g.num_train_steps, picker)
        return Groups(group_prompts, latents, log_probs, rewards, advantages, sigmas, stds, steps)

    @torch.no_grad()
    def score(self, trainer: "SRPOTrainer", x0: torch.Tensor, prompts: list[str], step: int) -> torch.Tensor:
        """Rewards [N] of clean latents ``x0`` [N,C,h,w]: a score-only reward's score, else the run's reward form."""
        images = trainer.policy.decode(x0)  # [N, 3, H, W]
        if is_score_only(trainer.reward):
            return trainer.reward.score(images, prompts).float().to(x0.device)
        if trainer.terms is not None:  # a multi-reward: its weighted sum on the denoise branch
            members = [(pos, j) for pos in trainer.global_positions(step) for j in range(trainer.cfg.grpo.group_size)]
            return trainer.term_rewards("denoise", images, prompts, step, trainer.grid_bounds[0], "grpo", members)[0]
        txt = trainer.text_sides(prompts, step)
        return trainer.branch_reward("denoise", trainer.image_features(images), txt, trainer.grid_bounds[0]).float()

    # ---- the policy gradient -------------------------------------------------------------
    def reference_velocity(self, trainer: "SRPOTrainer", prompts: list[str]):
        """A context giving the frozen reference's velocity: LoRA, the base (adapters off); full, a frozen copy."""
        cfg, policy = trainer.cfg, trainer.policy

        @contextlib.contextmanager
        def context():
            with torch.no_grad():
                if cfg.finetune == "lora":
                    model = trainer.processes.unwrapped()
                    model.disable_adapters()
                    try:
                        yield policy.velocity_fn(policy.encode_prompts(prompts), cfg.guidance)
                    finally:
                        model.enable_adapters()
                    return
                if getattr(trainer, "grpo_reference", None) is None:  # kept from the first update (the base model)
                    trainer.grpo_reference = copy.deepcopy(trainer.processes.unwrapped()).requires_grad_(False).eval()
                policy.set_forward_module(trainer.grpo_reference)
                try:
                    yield policy.velocity_fn(policy.encode_prompts(prompts), cfg.guidance)
                finally:
                    policy.set_forward_module(trainer.processes.module)
        return context()

    def micro_steps(self, trainer: "SRPOTrainer", groups: Groups) -> list[tuple[int, slice]]:
        """(sampler step, sample slice) of each backward micro-step: every trained step x every chunk."""
        n = len(groups.prompts)
        size = trainer.cfg.grpo.micro_batch or n
        return [(k, slice(i, min(i + size, n))) for k in groups.steps for i in range(0, n, size)]

    def micro_loss(self, trainer: "SRPOTrainer", groups: Groups, k: int, rows: slice,
                   old: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipped objective (+ KL) of step ``k`` on samples ``rows``, with grad, and its ratio [n]."""
        cfg, g, policy = trainer.cfg, trainer.cfg.grpo, trainer.policy
        prompts = groups.prompts[rows]
        x, x_next = groups.latents[k][rows], groups.latents[k + 1][rows]
        t, t_next, sigma = float(groups.sigmas[k]), float(groups.sigmas[k + 1]), float(groups.stds[k])
        velocity = policy.velocity_fn(policy.encode_prompts(prompts), cfg.guidance)
        log_prob, mean, std = grpo.step_log_prob(velocity, x, x_next, t, t_next, sigma, g.log_prob)  # [n]
        key = (k, rows.start)
        if key not in old:  # the first inner epoch: on-policy, ratio exactly 1
            old[key] = log_prob.detach()
        loss, ratio = grpo.clipped_objective(log_prob, old[key], groups.advantages[rows], g.clip_range)
        if g.kl > 0:
            with self.reference_velocity(trainer, prompts) as ref_velocity:
                _, ref_mean, _ = grpo.step_log_prob(ref_velocity, x, x_next, t, t_next, sigma, g.log_prob)
            loss = loss + g.kl * grpo.gaussian_kl(mean, ref_mean, std).mean()
        return loss, ratio.detach()

    def optimise(self, trainer: "SRPOTrainer", groups: Groups, step: int) -> tuple[float, float, bool, list]:
        """``inner_epochs`` optimizer steps on ``groups``: (loss, grad norm, skipped) of the last, and each epoch's ratios."""
        micro = self.micro_steps(trainer, groups)
        n = len(groups.prompts)
        old: dict = {}
        ratios, result = [], (0.0, 0.0, False)
        trainer.processes.module.train()
        for _ in range(trainer.cfg.grpo.inner_epochs):
            trainer.optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=trainer.accelerator.device)
            epoch_ratios = []
            for m, (k, rows) in enumerate(micro):
                with trainer.processes.gradient_sync(m == len(micro) - 1):  # all-reduce once, after the last
                    loss, ratio = self.micro_loss(trainer, groups, k, rows, old)
                    loss = loss * (rows.stop - rows.start) / (n * len(groups.steps))  # the mean over samples and steps
                    trainer.accelerator.backward(loss)
                total += loss.detach()
                epoch_ratios.append(ratio)
            ratios.append(torch.cat(epoch_ratios))
            loss_value = float(trainer.accelerator.reduce(total, reduction="mean"))
            result = (loss_value, *apply_gradients(trainer, step, [loss_value]))
        return (*result, ratios)

    def update(self, trainer, step):
        from srpo.training.trainer import StepLog

        start = time.perf_counter()
        groups = self.sample(trainer, step)
        loss, grad_norm, skipped, _ = self.optimise(trainer, groups, step)
        reward = float(trainer.accelerator.reduce(groups.rewards.mean().to(trainer.accelerator.device),
                                                  reduction="mean"))
        seconds = time.perf_counter() - start
        return StepLog(step=step, reward=reward, inversion_reward=None, loss=loss, grad_norm=grad_norm,
                       sigmas=[float(groups.sigmas[k]) for k in groups.steps], skipped=skipped, seconds=seconds,
                       images_per_second=len(groups.prompts) * trainer.processes.world / seconds)


def apply_gradients(trainer: "SRPOTrainer", step: int, values: list[float]) -> tuple[float, bool]:
    """Clip, check and apply the accumulated gradients: (grad norm, skipped).

    The trainer's non-finite guard: when any of ``values`` (the update's loss and rewards, already
    averaged over processes) or the gradient norm is not finite, the optimizer step is skipped and
    counted; ``max_bad_steps`` in a row raise :class:`~srpo.training.trainer.NonFiniteError`.
    """
    from srpo.training.trainer import NonFiniteError

    cfg, acc = trainer.cfg, trainer.accelerator
    grad_norm = acc.clip_grad_norm_(trainer.params, cfg.max_grad_norm)
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
        grad_norm = grad_norm.full_tensor()
    grad_norm = float(grad_norm) if grad_norm is not None else 0.0
    skipped = not all(math.isfinite(v) for v in (*values, grad_norm))
    if skipped:
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.skipped += 1
        trainer.bad_in_a_row += 1
        log.warning("step %d: non-finite reward, loss or gradient, update skipped (%d in a row, %d in all)",
                    step, trainer.bad_in_a_row, trainer.skipped)
        if trainer.bad_in_a_row >= cfg.max_bad_steps:
            raise NonFiniteError(f"{trainer.bad_in_a_row} updates in a row had a non-finite reward, loss or gradient; "
                                 "the last good checkpoint is kept. Check the learning rate, dtype and reward "
                                 "scale, then resume")
    else:
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.bad_in_a_row = 0
    return grad_norm, skipped


#: Every ``train.method`` name and its method.
METHODS: dict[str, Method] = {m.name: m for m in (SRPO(), Method(), ReFL(), DraftLV(), Draft(), GRPO())}


def method_for(cfg: "TrainConfig") -> Method:
    """The method ``cfg.method`` names."""
    try:
        return METHODS[cfg.method]
    except KeyError:
        raise ValueError(f"train.method {cfg.method!r} is not a training method: use one of "
                         f"{sorted(METHODS)}") from None
