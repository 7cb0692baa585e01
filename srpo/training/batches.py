"""Which samples each process trains on at each step, and their seeded noise.

Randomness is counter-based: every draw is seeded from ``(train.seed, step, global sample
position)``, so a run does not depend on how the global batch is split over processes, and a
resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import torch

from srpo.artifacts import RolloutSet
from srpo.noise import derived_seed, seeded_noise


class SourcedPrompts(list):
    """An edit batch's instructions that carry, row for row, their source images ``sources`` [N,3,H,W] in [0, 1],
    the sources' captions ``source_prompts`` and the edits' target texts ``target_prompts`` (each list or None).

    The methods slice and repeat prompts; the sources must follow, to the policy's conditioning
    (:meth:`Batches.encode`) and to the reward (:func:`srpo.training.objective.source_kwargs`).
    """

    def __init__(self, prompts, sources: torch.Tensor, source_prompts: list[str] | None = None,
                 target_prompts: list[str] | None = None):
        super().__init__(prompts)
        if sources.shape[0] != len(self):
            raise ValueError(f"{sources.shape[0]} source images for {len(self)} prompts: give one source per prompt")
        self.sources = sources
        self.source_prompts = None if source_prompts is None else list(source_prompts)
        self.target_prompts = None if target_prompts is None else list(target_prompts)

    def __getitem__(self, key):
        if not isinstance(key, slice):
            return super().__getitem__(key)
        cut = lambda texts: None if texts is None else texts[key]  # noqa: E731
        return SourcedPrompts(super().__getitem__(key), self.sources[key], cut(self.source_prompts),
                              cut(self.target_prompts))


def repeat_each(prompts: list[str], n: int) -> list[str]:
    """Each prompt ``n`` times in a row (a group's members), its source and texts (if any) with it."""
    out = [p for p in prompts for _ in range(n)]
    if not isinstance(prompts, SourcedPrompts):
        return out
    rep = lambda texts: None if texts is None else [t for t in texts for _ in range(n)]  # noqa: E731
    return SourcedPrompts(out, prompts.sources.repeat_interleave(n, dim=0), rep(prompts.source_prompts),
                          rep(prompts.target_prompts))


def batch_prompts(batch: RolloutSet) -> list[str]:
    """A rollout batch's prompts, carrying their sources and texts when the set has sources (an edit run)."""
    if batch.sources is None:
        return batch.prompts
    return SourcedPrompts(batch.prompts, batch.sources, batch.source_prompts, batch.target_prompts)


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
        if batch.sources is None:
            self.policy.use_stored_conditioning(batch.prompts, batch.conditioning)
        elif batch.conditioning:  # an edit family's rows may depend on the source (Qwen-Image-Edit's do)
            self.policy.use_stored_conditioning(batch.prompts, batch.conditioning, self.source_conditioning(batch.sources))
        batch.prompts = batch_prompts(batch)
        return batch

    def source_conditioning(self, sources: torch.Tensor):
        """What the policy conditions on from source images [B,3,H,W] (:meth:`Policy.encode_sources`)."""
        return self.policy.encode_sources(sources.to(self.policy.device))

    def encode(self, prompts: list[str]):
        """The policy's conditioning of ``prompts``, with their sources for an edit batch (:class:`SourcedPrompts`)."""
        if not isinstance(prompts, SourcedPrompts):
            return self.policy.encode_prompts(prompts)
        return self.policy.encode_prompts(list(prompts), self.source_conditioning(prompts.sources))

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
        x0 = self.policy.rollout(self.encode(batch.prompts), eps, roll.num_steps, roll.shift,
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
