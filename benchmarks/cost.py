"""The paper's cost claim, side by side: updates, images, FLOPs and seconds each method needs to reach one target.

    SRPO_CACHE=/work/srpo_cache python -m benchmarks.cost    # ~15 min on 2 cores; every method reaches it

On the shapes world (the published ``builtin:shapes-flux`` and ``builtin:shapes-clip``, see
:mod:`benchmarks.world`), SRPO, Direct-Align, ReFL, DRaFT-LV, DRTune, GRPO, MixGRPO, DiffusionNFT and
AWM each train from the same generator on the same reward (the world's CLIP with the control words
"bright" vs "dark", the authors' weighted form; GRPO, MixGRPO, NFT and AWM score their groups' final
images with it, the others backpropagate through it)
towards the same target: the share of images graded bright up by ``--target`` (0.30) with the share
with both colours right within ``--max-fidelity-drop`` (0.10) of the base model's. Every
``--every`` updates a fixed probe set (``--probe-prompts`` base prompts, one fixed seed each) is
generated and graded from pixels (:func:`srpo.world.report.measure`); a method stops when a
probe reaches the target, or when its budget (``--budget-updates`` updates or ``--budget-seconds``
seconds of training) is spent.

Per method: updates, images generated (the online rollouts the gradient methods decode and
reward, the B x G samples of the group methods), FLOPs counted by torch's FLOP counter over every update
(:func:`benchmarks.common.count_flops`: matmuls, convolutions, attention, forward and backward;
the probes are not counted) and the wall seconds of the updates (measured under the counter, whose
overhead every method pays per operator), each up to the probe that reached the target, or
the budget's totals with ``reached: false``. Ratios are to SRPO; where either did not reach the
target, the ratio is of what was spent (a lower bound on the real ratio when only the other
method reached it). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from benchmarks.common import count_flops, emit, machine
from benchmarks.world import ensure_world
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig, load_reward
from srpo.world.experiments import load_world_policy, make_rollouts
from srpo.world.report import WorldReportConfig, generate, measure, steering_from_words
from srpo.world.shapes import all_base_prompts

log = logging.getLogger("benchmarks.cost")

#: What every method shares: the reward form and words, the optimiser, the guidance.
COMMON = dict(loss="linear", learning_rate=3e-5, max_grad_norm=1.0, guidance=3.5, reward_form="weighted",
              positive_words=["bright"], negative_words=["dark"])
METHODS = ("srpo", "direct_align", "refl", "draft_lv", "drtune", "grpo", "mixgrpo", "nft", "awm")


def method_configs(batch: int, group: int, seed: int, num_steps: int) -> dict[str, TrainConfig]:
    """One TrainConfig per method (``steps`` set per run). GRPO: batch/group prompts x group images = batch images."""
    common = dict(COMMON, steps=1, seed=seed)
    prompts, trained = max(1, batch // group), min(8, num_steps - 1)  # the group methods' prompts and trained steps
    return {
        "srpo": TrainConfig(method="srpo", inversion=True, discount="linear", num_injections=2, batch_size=batch,
                            **common),
        "direct_align": TrainConfig(method="direct_align", inversion=False, discount="linear", num_injections=2,
                                    batch_size=batch, **common),
        "refl": TrainConfig(method="refl", inversion=False, num_injections=2, batch_size=batch, **common),
        "draft_lv": TrainConfig(method="draft_lv", inversion=False, num_injections=2, batch_size=batch, **common),
        "drtune": TrainConfig(method="drtune", inversion=False, batch_size=batch, drtune=dict(num_train_steps=3),
                              **common),
        "grpo": TrainConfig(method="grpo", inversion=False, batch_size=prompts,
                            grpo=dict(group_size=group, steps="random", num_train_steps=trained, clip_range=0.2),
                            **common),
        "mixgrpo": TrainConfig(method="mixgrpo", inversion=False, batch_size=prompts,
                               grpo=dict(group_size=group, clip_range=0.2),
                               mixgrpo=dict(window_size=min(4, num_steps - 1), shift_every=25), **common),
        "nft": TrainConfig(method="nft", inversion=False, batch_size=prompts,  # GRPO's count of trained levels
                           nft=dict(group_size=group, train_fraction=(trained + 0.5) / num_steps), **common),
        "awm": TrainConfig(method="awm", inversion=False, batch_size=prompts,
                           awm=dict(group_size=group, num_train_steps=min(6, int(0.9 * num_steps) - 1)), **common),
    }


def images_per_update(cfg: TrainConfig) -> int:
    """Images generated per update: the batch's online rollouts, or a group method's B x G samples (the
    group size of whichever settings block the method has)."""
    groups = [block.group_size for block in (cfg.grpo, cfg.nft, cfg.awm) if block is not None]
    return cfg.batch_size * (groups[0] if groups else 1)


SHARE_TOLERANCE = 1e-6  # shares are counts over the probe images: a gain of exactly 9/30 is +0.30, not 0.2999...


def reached(point: dict, base: dict, target: float, max_drop: float) -> bool:
    return (point["steered_share"] - base["steered_share"] >= target - SHARE_TOLERANCE
            and base["colours"] - point["colours"] <= max_drop + SHARE_TOLERANCE)


def run(name: str, cfg: TrainConfig, setting: dict, args) -> dict:
    """Train ``name`` from the base generator until the target or the budget; what it spent."""
    from srpo.training.trainer import SRPOTrainer

    policy = load_world_policy(setting["policy"])
    cfg = cfg.model_copy(update={"steps": args.budget_updates})
    trainer = SRPOTrainer(policy, setting["reward"], setting["rollouts"], cfg, setting["rollout"])
    flops = seconds = 0.0
    points, hit = [], None
    for step in range(args.budget_updates):
        start = time.perf_counter()
        flops += count_flops(lambda: trainer.history.append(trainer.train_step(step)))
        seconds += time.perf_counter() - start
        if (step + 1) % args.every == 0 or step + 1 == args.budget_updates or seconds >= args.budget_seconds:
            point = setting["probe"](policy)
            point.update(updates=step + 1, flops=flops, seconds=seconds, images=(step + 1) * images_per_update(cfg))
            points.append(point)
            log.info("%s: %d updates, bright %+.3f colours %+.3f (%.0f s)", name, step + 1,
                     point["steered_share"] - setting["base"]["steered_share"],
                     point["colours"] - setting["base"]["colours"], seconds)
            if reached(point, setting["base"], args.target, args.max_fidelity_drop):
                hit = point
                break
        if seconds >= args.budget_seconds:
            break
    last = hit or points[-1]
    return {"name": name, "reached": hit is not None, "updates": last["updates"], "images": last["images"],
            "flops": last["flops"], "seconds": last["seconds"],
            "steered_gain": last["steered_share"] - setting["base"]["steered_share"],
            "colour_change": last["colours"] - setting["base"]["colours"],
            "curve": [{k: p[k] for k in ("updates", "steered_share", "colours", "flops", "seconds")} for p in points],
            "config": cfg.model_dump(mode="json", exclude_defaults=True)}


def with_ratios(results: list[dict]) -> list[dict]:
    """Each method's updates, images, FLOPs and seconds over SRPO's."""
    srpo = next((r for r in results if r["name"] == "srpo"), None)
    for r in results:
        r["ratio_to_srpo"] = ({k: r[k] / srpo[k] if srpo[k] else None for k in ("updates", "images", "flops", "seconds")}
                              if srpo else None)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-updates", type=int, default=150, help="most updates per method")
    parser.add_argument("--budget-seconds", type=float, default=1200.0, help="most training seconds per method")
    parser.add_argument("--every", type=int, default=5, help="probe every k updates")
    parser.add_argument("--probe-prompts", type=int, default=30, help="probe images (base prompts, one seed each)")
    parser.add_argument("--batch", type=int, default=8, help="images per update (GRPO: batch/group prompts)")
    parser.add_argument("--group", type=int, default=4, help="GRPO's group size")
    parser.add_argument("--num-steps", type=int, default=25, help="sampler steps (rollouts, GRPO, probes)")
    parser.add_argument("--target", type=float, default=0.30)
    parser.add_argument("--max-fidelity-drop", type=float, default=0.10)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [m for m in METHODS if m in args.methods.split(",")]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    record = ensure_world()
    policy_cfg = PolicyConfig(pretrained="builtin:shapes-flux", height=64, width=64, device="cpu")
    rollout = RolloutConfig(num_steps=args.num_steps, guidance=3.5, seed=args.seed)
    report = WorldReportConfig(samples_per_prompt=1, num_steps=args.num_steps)
    probe_prompts = all_base_prompts()[: args.probe_prompts]
    probe_seeds = [report.seed + 104729 * i for i in range(len(probe_prompts))]
    steering = steering_from_words(COMMON["positive_words"])

    def probe(policy) -> dict:
        was = policy.transformer.training
        policy.transformer.eval()
        point = measure(generate(policy, probe_prompts, probe_seeds, report), probe_prompts, steering)
        policy.transformer.train(was)
        return point

    setting = {"policy": policy_cfg, "rollout": rollout,
               "reward": load_reward(RewardConfig(name="hf_clip", checkpoint="builtin:shapes-clip")),
               "rollouts": make_rollouts(policy_cfg, rollout, all_base_prompts()[:45]), "probe": None}
    setting["probe"] = probe
    setting["base"] = probe(load_world_policy(policy_cfg))
    configs = method_configs(args.batch, args.group, args.seed, args.num_steps)
    results = with_ratios([run(name, configs[name], setting, args) for name in names])
    result = {"benchmark": "cost", "methods": results, "base": {k: setting["base"][k] for k in ("steered_share", "colours")},
              "target": {"steered_gain": args.target, "max_fidelity_drop": args.max_fidelity_drop},
              "budget": {"updates": args.budget_updates, "seconds": args.budget_seconds},
              "probe": {"images": len(probe_prompts), "every": args.every, "num_steps": args.num_steps},
              "paper_table1_gpu_hours": {"srpo": 5.3, "dancegrpo": 480, "refl": 16, "draft_lv": 24, "direct_align": 16},
              "reward_record": record.get("shapes-clip", {}), "seconds": time.perf_counter() - start,
              "machine": machine()}
    emit(result)
    return result


if __name__ == "__main__":
    main()
