"""The edit task's measured item: SRPO, plain Direct-Align and GRPO tune the world's edit model; done / kept before and after.

    SRPO_CACHE=... python -m benchmarks.edit_methods --grade-every 10 --json-out docs/benchmarks/edit_methods_item.json

Every method starts from the same base edit model (``--model``, default the published
``builtin:shapes-kontext``: ``configs/shapes_bootstrap_edit.yaml``) and trains through the real trainer
(:class:`srpo.training.trainer.SRPOTrainer`) on the same online rollouts of ``--train-pairs`` drawn
(source, instruction) pairs (seed ``--seed``; the edit model's own training pool is seed 5):

- ``srpo``: SRPO (inversion, both branches) on the edit multi-reward on the world's CLIP: the edited image
  against the target caption (the brightness / saturation word in SRP's control format), against the
  source (keep) and the direction from the source caption to the target caption (SRP's relative form with
  the source caption as the negative prompt); weights 1 / ``--keep-weight`` / 0.5; with ``--structure-weight``
  also the source's edges on pixels (``against: structure``). SRPO's inversion branch takes each plain
  term as a penalty (no words to swap);
- ``direct_align``: the same reward, Direct-Align's denoise branch only (no inversion);
- ``grpo``: GRPO on the world's pixel grader as a score-only edit judge (``shapes-edit``: done + kept).

Before and after, ``--held-out`` edits drawn from seed 777 (never trained on) are edited and graded from
pixels (:func:`srpo.world.edit_generator.check_edit_model`): done, kept, both per attribute. Per method:
updates, images generated, FLOPs counted by torch's counter over every update (forward and backward;
:func:`benchmarks.common.count_flops`) and the updates' wall seconds; with ``--grade-every N`` also the
held-out grades every N updates (``curve``; grading is not counted in FLOPs or seconds). The defaults are the
measured item's setting and ``configs/shapes_edit.yaml``'s: 50 updates of 8 images at lr 5e-5, guidance 2.5.
One JSON object as the last line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time

from benchmarks.common import count_flops, emit, machine
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards.combine import MultiReward, load_multi_reward
from srpo.rewards.config import MultiRewardConfig
from srpo.rewards.scores import ScoreReward
from srpo.world.edit_generator import check_edit_model
from srpo.world.edits import draw_edits, edit_score, write_edit_folder

log = logging.getLogger("benchmarks.edit_methods")

METHODS = ("srpo", "direct_align", "grpo")
HELD_OUT_SEED = 777  # check_edit_model's default: neither the model's pool (5) nor the training pairs
#: The edit reward's weights by default: those of configs/shapes_edit.yaml (a test holds them equal).
KEEP_WEIGHT, STRUCTURE_WEIGHT = 0.5, 0.0
#: The training run by default, also configs/shapes_edit.yaml's (a test holds them equal): the measured item's setting.
UPDATES, LEARNING_RATE, BATCH, GUIDANCE = 50, 5e-5, 8, 2.5


def method_configs(args) -> dict[str, TrainConfig]:
    """One TrainConfig per method; GRPO: batch/group instructions x group edits = the same images per update."""
    common = dict(steps=args.updates, learning_rate=args.learning_rate, max_grad_norm=1.0, guidance=args.guidance,
                  loss="linear", seed=args.seed)
    return {
        "srpo": TrainConfig(method="srpo", inversion=True, discount="linear", num_injections=2,
                            batch_size=args.batch, **common),
        "direct_align": TrainConfig(method="direct_align", inversion=False, discount="linear", num_injections=2,
                                    batch_size=args.batch, **common),
        "grpo": TrainConfig(method="grpo", inversion=False, batch_size=max(1, args.batch // args.group),
                            grpo=dict(group_size=args.group, steps="random", num_train_steps=min(8, args.num_steps - 1),
                                      clip_range=0.2), **common),
    }


CLIP = {"name": "hf_clip", "checkpoint": "builtin:shapes-clip"}


def edit_terms(keep_weight: float, structure_weight: float = 0.0) -> list[dict]:
    """The edit multi-reward's entries on the world's CLIP (as ``configs/shapes_edit.yaml`` writes them): target,
    keep, direction, and the source's edges on pixels where ``structure_weight`` > 0."""
    terms = [{"name": "target", "reward": CLIP, "form": "plain"},
             {"name": "keep", "reward": CLIP, "against": "source", "form": "plain", "weight": keep_weight},
             {"name": "direction", "reward": CLIP, "against": "direction", "form": "plain", "weight": 0.5}]
    if structure_weight > 0:
        terms.append({"name": "structure", "reward": CLIP, "against": "structure", "form": "plain",
                      "weight": structure_weight})
    return terms


def edit_reward(keep_weight: float, structure_weight: float = 0.0) -> MultiReward:
    """:func:`edit_terms` loaded (one CLIP for every term)."""
    return load_multi_reward(MultiRewardConfig(rewards=edit_terms(keep_weight, structure_weight)))


def graded(policy, args) -> dict:
    was = policy.transformer.training
    policy.transformer.eval()
    out = check_edit_model(policy, n=args.held_out, seed=HELD_OUT_SEED, num_steps=args.num_steps,
                           guidance=args.guidance)["model"]
    policy.transformer.train(was)
    return out


def run(name: str, cfg: TrainConfig, setting: dict, args) -> dict:
    """Train ``name`` from the base model for ``args.updates`` updates; its held-out grades and its cost."""
    from srpo.training.trainer import SRPOTrainer

    policy = load_policy(setting["policy"])
    reward = setting["score"] if name == "grpo" else setting["reward"]
    trainer = SRPOTrainer(policy, reward, setting["rollouts"], cfg, setting["rollout"])
    flops = seconds = 0.0
    curve = []  # held-out grades every --grade-every updates (not counted in flops / seconds)
    for step in range(args.updates):
        start = time.perf_counter()
        flops += count_flops(lambda: trainer.history.append(trainer.train_step(step)))
        seconds += time.perf_counter() - start
        if args.grade_every and (step + 1) % args.grade_every == 0 and step + 1 < args.updates:
            now = graded(policy, args)
            curve.append({"updates": step + 1, "done": now["done"], "kept": now["kept"]})
            log.info("%s after %d updates: done %.3f, kept %.3f", name, step + 1, now["done"], now["kept"])
    after = graded(policy, args)
    curve.append({"updates": args.updates, "done": after["done"], "kept": after["kept"]})
    base = setting["base"]
    group = cfg.grpo.group_size if cfg.grpo is not None else 1
    log.info("%s: done %.3f -> %.3f, kept %.3f -> %.3f (%.0f s)", name, base["done"], after["done"], base["kept"],
             after["kept"], seconds)
    return {"name": name, "done": after["done"], "kept": after["kept"], "done_gain": after["done"] - base["done"],
            "kept_change": after["kept"] - base["kept"], "done_by_attribute": after["done_by_attribute"],
            "kept_by_attribute": after["kept_by_attribute"], "curve": curve, "updates": args.updates,
            "images": args.updates * cfg.batch_size * group, "flops": flops, "seconds": seconds,
            "skipped_updates": sum(bool(getattr(h, "skipped", False)) for h in trainer.history),
            "config": cfg.model_dump(mode="json", exclude_defaults=True)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edit_methods", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:shapes-kontext", help="the base edit model (folder or builtin:)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--updates", type=int, default=UPDATES)
    parser.add_argument("--batch", type=int, default=BATCH, help="edited images per update (GRPO: batch/group pairs)")
    parser.add_argument("--group", type=int, default=4, help="GRPO's group size")
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--keep-weight", type=float, default=KEEP_WEIGHT,
                        help="the keep (source consistency) term's weight")
    parser.add_argument("--structure-weight", type=float, default=STRUCTURE_WEIGHT,
                        help="the structure term's weight (the source's edges, on pixels; 0: no such term)")
    parser.add_argument("--grade-every", type=int, default=0,
                        help="also grade the held-out edits every this many updates (the curve; 0: at the end only)")
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=240)
    parser.add_argument("--num-steps", type=int, default=25, help="sampler steps (rollouts, GRPO, grading)")
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--seed", type=int, default=1, help="the training pairs' seed (held out: 777)")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if args.seed in (5, HELD_OUT_SEED):
        parser.error(f"--seed {args.seed}: the edit model's pool (5) and the held-out edits (777) use it; pick another")
    names = [m for m in METHODS if m in args.methods.split(",")]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    from srpo.training.rollouts import edit_rollouts

    policy_cfg = PolicyConfig(pretrained=args.model, height=64, width=64, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_edit_folder(draw_edits(args.train_pairs, args.seed), f"{tmp}/edits")
        rollout = RolloutConfig(edits=str(folder), num_steps=args.num_steps, guidance=args.guidance, seed=args.seed)
        base_policy = load_policy(policy_cfg)
        rollouts = edit_rollouts(base_policy, rollout, policy_cfg)
    setting = {"policy": policy_cfg, "rollout": rollout, "rollouts": rollouts,
               "reward": edit_reward(args.keep_weight, args.structure_weight),
               "score": ScoreReward(edit_score, "shapes-edit"), "base": graded(base_policy, args)}
    configs = method_configs(args)
    results = [run(name, configs[name], setting, args) for name in names]
    base = setting["base"]
    result = {"benchmark": "edit_methods", "model": args.model, "base": base, "methods": results,
              "target": {"done_gain": 0.20, "kept": 0.90},
              "settings": {k: v for k, v in vars(args).items() if k not in ("json_out", "methods")},
              "held_out_seed": HELD_OUT_SEED, "seconds": time.perf_counter() - start, "machine": machine()}
    emit(result, args.json_out)
    return result


if __name__ == "__main__":
    main()
