"""The paper's fig. 9d ablation on the shapes world, with the baselines in the same trainer.

    python -m benchmarks.ablation [--steps 40] [--seed 0]

All rows train the same generator for the same number of updates on the same rollouts, seed and
reward (the world's CLIP with a planted saturation preference, so that hacking is measurable),
and aim at "bright". Rows:

- ``srpo``: full SRPO: relative reward "bright" vs "dark" (weighted form), inversion branch,
  linear discount, the paper's early grid (sigma 0.75..0.96);
- ``no_early_timesteps``: SRPO on late levels only (sigma 0.05..0.25);
- ``no_discount``: SRPO without the discount lambda(t);
- ``no_inversion``: no inversion branch, the relative reward built directly (eq. 10, CFG-like,
  k = 1.5), as the paper's fig. 9d compares;
- ``no_inversion_weighted``: no inversion branch, SRPO's own relative reward kept (separates the
  branch from the reward form);
- baselines on the absolute reward of "bright. <prompt>": ``direct_align`` (Direct-Align without
  SRP, early grid), ``refl`` (one-step prediction at late levels 0.05..0.25), ``draft_lv``
  (the last sampler step, 2 noise draws).

Paper's measures (human ratings of realism, texture, aesthetics) map to: ``target_gain`` (share
of bright images), ``bias_gain`` (share of vivid images: hacking), ``fidelity`` (both colours
right). Last line: one JSON object with ``rows``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from benchmarks.common import emit, machine
from benchmarks.hacking import COMMON, LATE, SUMMARY, compare
from benchmarks.world import ensure_world
from srpo.config import TrainConfig


def rows(steps: int, seed: int) -> dict[str, TrainConfig]:
    common = dict(COMMON, steps=steps, seed=seed)
    srpo = dict(method="srpo", inversion=True, discount="linear", reward_form="weighted",
                positive_words=["bright"], negative_words=["dark"], **common)
    absolute = dict(inversion=False, discount="none", reward_form="sgp", positive_words=["bright"],
                    negative_words=[], **common)
    return {
        "srpo": TrainConfig(**srpo),
        "no_early_timesteps": TrainConfig(**{**srpo, "sigma_range": LATE}),
        "no_discount": TrainConfig(**{**srpo, "discount": "none"}),
        "no_inversion": TrainConfig(**{**srpo, "inversion": False, "reward_form": "cfg"}),
        "no_inversion_weighted": TrainConfig(**{**srpo, "inversion": False}),
        "direct_align": TrainConfig(method="direct_align", **absolute),
        "refl": TrainConfig(method="refl", sigma_range=LATE, **absolute),
        "draft_lv": TrainConfig(method="draft_lv", **absolute),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    ensure_world(biased=True)
    before, runs = compare(rows(args.steps, args.seed), "shapes-clip-biased", args.seed, args.only)
    out = [{k: r[k] for k in SUMMARY} for r in runs]
    result = {"benchmark": "ablation", "rows": out, "before": before, "steps": args.steps, "seed": args.seed,
              "reward": "shapes-clip-biased", "images": 120, "seconds": time.perf_counter() - start,
              "machine": machine()}
    emit(result)
    return result


if __name__ == "__main__":
    main()
