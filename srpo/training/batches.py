"""Which samples each process trains on at each step, and their seeded noise.

Randomness is counter-based: every draw is seeded from ``(train.seed, step, global sample
position)``, so a run does not depend on how the global batch is split over processes, and a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import torch

from srpo.artifacts import RolloutSet
from srpo.noise import derived_seed, seeded_noise


class Batches:
    """This process's share of the rollout set, step by step.

    The global batch (``batch_size`` x processes) takes the next positions of a stream of seeded
    permutations of the rollouts (one per epoch); process ``rank`` takes its ``rank``-th slice.
    """

    def __init__(self, rollouts: RolloutSet, policy, cfg, rollout_cfg, rank: int, world: int):
        if len(rollouts) == 0:
            raise ValueError("the rollout set is empty: nothing to train on")
        self.rollouts, self.policy, self.cfg, self.rollout_cfg = rollouts, policy, cfg, rollout_cfg
        self.rank, self.world = rank, world

    @property
    def latent_shape(self) -> torch.Size:
        """[C, h, w] of one sample's latent."""
        return self.rollouts.x0.shape[1:]

    def positions(self, step: int) -> list[int]:
        """The global positions in the sample stream of this process's ``batch_size`` samples at ``step``."""
        b = self.cfg.batch_size
        first = step * b * self.world + self.rank * b
        return list(range(first, first + b))

    def indices(self, step: int) -> torch.Tensor:
        """This process's rollout indices [B] for ``step``."""
        n, picks = len(self.rollouts), []
        for pos in self.positions(step):
            epoch, offset = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(self.cfg.seed, "epoch", epoch)))
            picks.append(int(perm[offset]))
        return torch.tensor(picks)

    def noise(self, step: int, tag: str, shape) -> torch.Tensor:
        """Noise [B,*shape] for this process's samples, seeded by (seed, step, tag, global position)."""
        seeds = [derived_seed(self.cfg.seed, step, tag, pos) for pos in self.positions(step)]
        return seeded_noise(shape, seeds).to(self.policy.device)

    def rollout_batch(self, step: int):
        """This process's rows of the rollout set for ``step``; their stored conditioning goes into the
        policy's prompt cache (the training process loads no text encoder)."""
        batch = self.rollouts.batch(self.indices(step))
        self.policy.use_stored_conditioning(batch.prompts, batch.conditioning)
        return batch

    def clean_batch(self, step: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Prompts, x0 [B,C,h,w] and eps [B,C,h,w] for ``step``.

        Online: the stored rollouts are on-policy only before the first update; afterwards each
        batch is rolled out afresh by the current policy from fresh noise. Offline: stored x0
        (encoded real images) with fresh noise.
        """
        batch = self.rollout_batch(step)
        eps = self._start_noise(batch, step)
        if self.rollouts.mode == "offline" or step == 0:
            return batch.prompts, batch.x0.to(self.policy.device), eps
        roll = self.rollout_cfg
        x0 = self.policy.rollout(self.policy.encode_prompts(batch.prompts), eps, roll.num_steps, roll.shift,
                                 roll.guidance)
        return batch.prompts, x0, eps

    def chain_start(self, step: int) -> tuple[list[str], torch.Tensor]:
        """Prompts and eps [B,C,h,w] for ``step``, the noise :meth:`clean_batch` would pair with them, without the
        clean images: what a method that samples its own chain from the noise needs (no rollout is made)."""
        batch = self.rollout_batch(step)
        return batch.prompts, self._start_noise(batch, step)

    def _start_noise(self, batch, step: int) -> torch.Tensor:
        """The stored rollout noise before the first online update (it made the stored x0), else fresh noise."""
        if self.rollouts.mode == "online" and step == 0:
            return batch.eps.to(self.policy.device)
        return self.noise(step, "eps", batch.eps.shape[1:])
