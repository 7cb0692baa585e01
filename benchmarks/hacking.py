"""Reward hacking with a planted bias: Direct-Align (plain, late-only) vs SRPO (paper figs. 7, 9d).

    python -m benchmarks.hacking [--steps 40] [--seed 0]

The reward here is the world's CLIP trained with a *planted* preference for vivid (saturated)
renderings whenever a caption does not mention saturation (``shapes-clip-biased``; it still
ranks every attribute word right). Every method starts from the same generator, trains for the
same number of updates on the same rollouts with the same seed, and aims at "bright":

- ``direct_align``: Direct-Align on the absolute reward of "bright. <prompt>" (SGP: what one does
  without SRP), the paper's early grid (sigma 0.75..0.96), no discount, no inversion;
- ``direct_align_late``: the same on late, low-noise levels only (sigma 0.05..0.25);
- ``direct_align_plain_reward``: Direct-Align on the reward as it is (no control word at all);
- ``srpo``: SRPO, relative reward "bright" vs "dark" (the authors' weighted form), inversion
  branch, linear discount;
- ``drtune``: DRTune through the whole chain on the absolute reward of "bright. <prompt>";
- ``grpo``, ``mixgrpo``, ``nft``, ``awm``: the group methods (2 prompts x 4 images an update) with the
  same absolute reward as a score (no gradient through it).

Measured on 120 images (60 prompts x 2 fixed seeds) graded from pixels: ``target_gain`` = change
of the share of bright images, ``bias_gain`` = change of the share of vivid images (the hacking
measure: nothing asked for saturation), ``fidelity`` = share with both colours right after
training. Last line: one JSON object with ``methods``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from benchmarks.common import emit, machine
from benchmarks.world import ensure_world
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig, load_reward
from srpo.world.experiments import Setting, base_measure, make_rollouts, run_method
from srpo.world.report import WorldReportConfig
from srpo.world.shapes import all_base_prompts

COMMON = dict(batch_size=8, num_injections=2, loss="linear", learning_rate=3e-5, max_grad_norm=1.0, guidance=3.5)
LATE = (0.05, 0.25)


def methods(steps: int, seed: int) -> dict[str, TrainConfig]:
    common = dict(COMMON, steps=steps, seed=seed)
    return {
        "direct_align": TrainConfig(method="direct_align", inversion=False, discount="none", reward_form="sgp",
                                    positive_words=["bright"], negative_words=[], **common),
        "direct_align_late": TrainConfig(method="direct_align", inversion=False, discount="none", reward_form="sgp",
                                         positive_words=["bright"], negative_words=[], sigma_range=LATE, **common),
        "direct_align_plain_reward": TrainConfig(method="direct_align", inversion=False, discount="none",
                                                 reward_form="plain", positive_words=[], negative_words=[], **common),
        "srpo": TrainConfig(method="srpo", inversion=True, discount="linear", reward_form="weighted",
                            positive_words=["bright"], negative_words=["dark"], **common),
        "drtune": TrainConfig(method="drtune", inversion=False, reward_form="sgp", positive_words=["bright"],
                              negative_words=[], drtune=dict(num_train_steps=3), **common),
        **group_methods(dict(common, batch_size=COMMON["batch_size"] // GROUP)),
    }


GROUP = 4  # images per prompt of the group methods: batch_size / GROUP prompts, the same 8 images an update


def group_methods(common: dict) -> dict[str, TrainConfig]:
    """GRPO, MixGRPO, NFT and AWM scoring their groups with the biased reward of "bright. <prompt>" (SGP, no
    gradient taken: the reward as a score), as a user without SRP's relative reward would."""
    words = dict(inversion=False, reward_form="sgp", positive_words=["bright"], negative_words=[])
    return {
        "grpo": TrainConfig(method="grpo", grpo=dict(group_size=GROUP, steps="random", num_train_steps=8,
                                                     clip_range=0.2), **words, **common),
        "mixgrpo": TrainConfig(method="mixgrpo", grpo=dict(group_size=GROUP, clip_range=0.2), mixgrpo=dict(),
                               **words, **common),
        "nft": TrainConfig(method="nft", nft=dict(group_size=GROUP, train_fraction=0.34), **words, **common),
        "awm": TrainConfig(method="awm", awm=dict(group_size=GROUP), **words, **common),
    }


def setting(reward_name: str, seed: int) -> Setting:
    policy = PolicyConfig(pretrained="builtin:shapes-flux", height=64, width=64, device="cpu")
    rollout = RolloutConfig(num_steps=25, guidance=3.5, seed=seed)
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=f"builtin:{reward_name}"))
    rollouts = make_rollouts(policy, rollout, all_base_prompts()[:45])
    return Setting(policy, rollout, reward, rollouts, WorldReportConfig(samples_per_prompt=2))


SUMMARY = ("name", "target_gain", "bias_gain", "fidelity", "fidelity_change", "saturation_gain", "reward_gain",
           "seconds")
WORDS = (["bright"], "dark")  # steer towards "bright"; its opposite is the control word


def compare(configs: dict[str, TrainConfig], reward_name: str, seed: int, only=None) -> tuple[dict, list[dict]]:
    """The base model's measures and each method's run (``only``: a subset of the names) on one setting."""
    shared = setting(reward_name, seed)
    before = base_measure(shared, WORDS)
    runs = [run_method(name, cfg, shared, WORDS, before) for name, cfg in configs.items() if not only or name in only]
    return before, runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="run only these methods")
    parser.add_argument("--reward", default="shapes-clip-biased", choices=["shapes-clip-biased", "shapes-clip"],
                        help="shapes-clip: the control without a planted bias")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    record = ensure_world(biased=args.reward == "shapes-clip-biased")
    before, runs = compare(methods(args.steps, args.seed), args.reward, args.seed, args.only)
    results = [{k: r[k] for k in SUMMARY} | {"after": r["after"]} for r in runs]
    result = {"benchmark": "hacking", "methods": results, "before": before, "steps": args.steps, "seed": args.seed,
              "reward": args.reward + (" (planted saturation preference)" if args.reward.endswith("biased") else ""),
              "reward_record": record.get(args.reward, {}), "images": 120,
              "seconds": time.perf_counter() - start, "machine": machine()}
    emit(result)
    return result


if __name__ == "__main__":
    main()
