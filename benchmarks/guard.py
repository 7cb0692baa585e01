"""The training guard on the shapes world: the demo's one guard block in every direction, and on a planted bias.

    python -m benchmarks.guard [--only directions hacking overhead] [--directions bright dark vivid muted]
        [--lr-scale S] [--anchor-pull P] [--guard-setting KEY=VALUE ...] [--world-seed N] [--content-weight W]

- ``directions``: ``configs/shapes_demo.yaml`` as it is, with only the control words changed
  (bright/dark, dark/bright, vivid/muted, muted/vivid), trained as the pipeline trains it (the
  same prompt split, rollouts, guard built from the held-out prompts; the guard follows the
  trainer's words) and measured as its ``world_report`` step measures the published weights (240
  images: the 60 base prompts x 4 seeds at 25 steps). Targets (issue 24): the steered share moves
  >= 30 points with <= 10 points of colour fidelity lost, guard time <= 25 % of training time.
- ``hacking``: the planted-saturation reward of ``benchmarks.hacking`` (``shapes-clip-biased``)
  trained with plain Direct-Align towards "bright" (SGP, no SRP), once without a guard and once
  with the demo's guard block (its saturation rule applies: "bright" does not steer saturation);
  measured on the benchmarks' 120 images (60 prompts x 2 seeds). The guarded run should publish
  a model whose bias gain (vivid share) stays below the unguarded one's.

- ``overhead``: the demo config's guard cost against its training cost on the world's
  architecture with *untrained* weights (an update and a check do the same arithmetic whatever
  the weights): ``--steps-overhead`` updates with the demo's guard, then the seconds per check
  and per update give the demo's ratio (its 9 checks over 40 updates). Needs no bootstrap.

``--content-weight W`` (directions, hacking): the train block's ``content_weight`` (the demo's otherwise): ``W``
times the reward on the plain prompt added to the relative reward (docs/training.md); the guard and the
report unchanged.

``overhead``: guard seconds / training seconds (the updates alone). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import emit, machine
from benchmarks.world import ensure_world
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.prompts import PromptConfig, prepare_prompts
from srpo.rewards import RewardConfig, load_reward
from srpo.world.report import WorldReportConfig, compare, eval_prompts, generate, measure, steering_from_words

DEMO = Path(__file__).resolve().parent.parent / "configs" / "shapes_demo.yaml"
#: (positive, negative) words of each direction the world supports
DIRECTIONS = {"bright": ("bright", "dark"), "dark": ("dark", "bright"), "vivid": ("vivid", "muted"),
              "muted": ("muted", "vivid")}
log = logging.getLogger(__name__)


def demo_parameters(path: Path = DEMO) -> dict:
    return yaml.safe_load(path.read_text())["parameters"]


def direction_config(params: dict, positive: str, negative: str) -> TrainConfig:
    """The demo's train block with only the words changed (the guard block untouched)."""
    return TrainConfig(**{**params["train"], "positive_words": [positive], "negative_words": [negative]})


def train_guarded(policy_cfg: PolicyConfig, reward, rollouts, train: TrainConfig, rollout: RolloutConfig,
                  held_out: list[str], out: Path) -> dict:
    """Train as the pipeline's train step does (guard from the held-out prompts) and save the published weights."""
    from srpo.models.families import load_policy
    from srpo.training.guard import Guard
    from srpo.training.trainer import SRPOTrainer
    from srpo.world.guard_metrics import build_world_guard_metrics

    guard = None
    if train.guard is not None:
        prompts, seeds = train.guard.prompts_and_seeds(held_out)
        guard = Guard(train.guard, build_world_guard_metrics(train.guard, reward=reward), prompts, seeds)
    trainer = SRPOTrainer(load_policy(policy_cfg), reward, rollouts, train, rollout, guard=guard)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save(out)
    summary = guard.summary() if guard is not None else None
    guard_seconds = summary["seconds"] if summary else 0.0
    return {"updates": len(trainer.history), "guard": summary, "guard_seconds": guard_seconds,
            "train_seconds": seconds - guard_seconds, "overhead": guard_seconds / max(seconds - guard_seconds, 1e-9)}


def checks_table(summary: dict | None) -> list[dict]:
    if not summary:
        return []
    return [{"step": c["step"], "ok": c["ok"], "decision": c["decision"], "dense": c.get("dense", False),
             "rewind": c.get("rewind"), "lr_scale": c.get("lr_scale", 1.0),
             **c["values"], **{f"{k}_se": v for k, v in c.get("errors", {}).items()},
             **{f"{k}_used": v for k, v in c.get("used", {}).items()}} for c in summary["checks"]]


def run_directions(names: list[str], seed: int, lr_scale: float = 1.0, guard_settings: dict | None = None,
                   content_weight: float | None = None) -> list[dict]:
    """The demo in each direction: published weights measured by the world report (240 images)."""
    from srpo.models.families import load_policy
    from srpo.training.rollouts import generate_rollouts

    params = demo_parameters()
    policy_cfg = PolicyConfig(**params["policy"])
    rollout = RolloutConfig(**{**params["rollouts"], "seed": seed})
    reward = load_reward(RewardConfig(**params["reward"]))
    split = prepare_prompts(PromptConfig(**params["prompts"]))
    rollouts = generate_rollouts(load_policy(policy_cfg), split.train, rollout, policy_cfg)
    report = WorldReportConfig(**params["world"])
    prompts, seeds = eval_prompts(report)
    base_images = generate(load_policy(policy_cfg), prompts, seeds, report)
    runs = []
    for name in names:
        positive, negative = DIRECTIONS[name]
        train = direction_config(params, positive, negative)
        train = train.model_copy(update={"seed": seed, "learning_rate": train.learning_rate * lr_scale})
        if content_weight is not None:
            train = TrainConfig(**{**train.model_dump(), "content_weight": content_weight})  # validated
        if guard_settings:  # e.g. the guard without its response (recoveries=0, early_check=false), validated
            guard = type(train.guard)(**{**train.guard.model_dump(), **guard_settings})
            train = train.model_copy(update={"guard": guard})
        steering = steering_from_words(train.positive_words)
        with tempfile.TemporaryDirectory() as tmp:
            run = train_guarded(policy_cfg, reward, rollouts, train, rollout, split.heldout, Path(tmp))
            tuned = load_policy(policy_cfg, transformer=tmp)
        before = measure(base_images, prompts, steering, reward, negative)
        after = measure(generate(tuned, prompts, seeds, report), prompts, steering, reward, negative)
        comparison = compare(before, after, report)
        guard = run.pop("guard")
        runs.append({"direction": name, "positive": positive, "negative": negative, "steps": train.steps,
                     "learning_rate": train.learning_rate, "content_weight": train.content_weight,
                     "checks_taken": len(guard["checks"]),
                     "published_update": guard["selected_update"], "stopped": guard["stopped"],
                     "rules_off": guard["steered"], "unresolved": guard["unresolved"],
                     "recoveries": guard.get("recoveries", []),
                     "movement": comparison["movement"], "colour_drop": comparison["colour_drop"],
                     "movement_reached": comparison["movement_reached"],
                     "fidelity_kept": comparison["fidelity_kept"], **run,
                     "overhead_kept": run["overhead"] <= 0.25, "before": before, "after": after,
                     "checks": checks_table(guard)})
        log.info("%s: published update %s (stopped: %s); moved %+.1f pp, colours %+.1f pp; overhead %.2f", name,
                 guard["selected_update"], guard["stopped"], 100 * comparison["movement"],
                 -100 * comparison["colour_drop"], run["overhead"])
    return runs


def hacking_config(params: dict, steps: int, seed: int, guarded: bool,
                   content_weight: float | None = None) -> TrainConfig:
    """Plain Direct-Align towards "bright" (SGP) with the demo's optimiser settings and content term (or
    ``content_weight``) and, if ``guarded``, its guard."""
    demo = {**params["train"], **({} if content_weight is None else {"content_weight": content_weight})}
    common = {k: demo[k] for k in ("batch_size", "num_injections", "loss", "learning_rate", "max_grad_norm",
                                   "guidance", "content_weight") if k in demo}
    return TrainConfig(method="direct_align", steps=steps, inversion=False, discount="none", reward_form="sgp",
                       positive_words=["bright"], negative_words=[], seed=seed,
                       guard=demo["guard"] if guarded else None, **common)


def gains(after: dict, before: dict) -> dict:
    return {"target_gain": after["steered_share"] - before["steered_share"],
            "bias_gain": after["vivid_share"] - before["vivid_share"],
            "fidelity_change": after["colours"] - before["colours"]}


def run_hacking(steps: int, seed: int, content_weight: float | None = None) -> dict:
    """The planted-bias run without and with the demo's guard block; measured on 120 images."""
    from srpo.models.families import load_policy
    from srpo.world.experiments import Setting, make_rollouts, measure_policy
    from srpo.world.shapes import all_base_prompts

    params = demo_parameters()
    policy_cfg = PolicyConfig(**params["policy"])
    rollout = RolloutConfig(num_steps=25, guidance=3.5, seed=seed)
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint="builtin:shapes-clip-biased"))
    prompts = all_base_prompts()
    setting = Setting(policy_cfg, rollout, reward, make_rollouts(policy_cfg, rollout, prompts[:45]),
                      WorldReportConfig(samples_per_prompt=2))
    before = measure_policy(load_policy(policy_cfg), setting, ["bright"], None)
    out = {"name": "hacking", "reward": "shapes-clip-biased", "steered": "bright", "steps": steps, "images": 120,
           "content_weight": hacking_config(params, steps, seed, False, content_weight).content_weight}
    for label, guarded in (("unguarded", False), ("guarded", True)):
        train = hacking_config(params, steps, seed, guarded, content_weight)
        with tempfile.TemporaryDirectory() as tmp:
            run = train_guarded(policy_cfg, reward, setting.rollouts, train, rollout, prompts[45:], Path(tmp))
            after = measure_policy(load_policy(policy_cfg, transformer=tmp), setting, ["bright"], None)
        guard = run.pop("guard")
        out[label] = {**gains(after, before), **run, "after": after,
                      "published_update": guard["selected_update"] if guard else steps,
                      "stopped": guard["stopped"] if guard else None, "rules_off": guard["steered"] if guard else [],
                      "recoveries": guard.get("recoveries", []) if guard else [],
                      "checks": checks_table(guard)}
    out["before"] = before
    out["bias_below_unguarded"] = out["guarded"]["bias_gain"] < out["unguarded"]["bias_gain"]
    log.info("hacking: bias gain unguarded %+.3f, guarded %+.3f (published update %s)", out["unguarded"]["bias_gain"],
             out["guarded"]["bias_gain"], out["guarded"]["published_update"])
    return out


def run_overhead(steps: int, seed: int, folder: Path) -> dict:
    """Seconds per guard check and per update of the demo config on the untrained world architecture."""
    from benchmarks.world import bootstrap_settings
    from srpo.models.families import load_policy
    from srpo.training.rollouts import generate_rollouts
    from srpo.world.generator import build_pipeline, save_pipeline
    from srpo.world.reward import build_reward_model, save_reward

    _, gen_cfg, rew_cfg, _ = bootstrap_settings()
    save_pipeline(build_pipeline(gen_cfg), folder / "flux")
    save_reward(build_reward_model(rew_cfg), folder / "clip")
    params = demo_parameters()
    policy_cfg = PolicyConfig(**{**params["policy"], "pretrained": str(folder / "flux")})
    rollout = RolloutConfig(**{**params["rollouts"], "seed": seed})
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=str(folder / "clip")))
    split = prepare_prompts(PromptConfig(**params["prompts"]))
    rollouts = generate_rollouts(load_policy(policy_cfg), split.train, rollout, policy_cfg)
    demo = TrainConfig(**params["train"])
    train = demo.model_copy(update={"steps": steps, "seed": seed})
    run = train_guarded(policy_cfg, reward, rollouts, train, rollout, split.heldout, folder / "out")
    checks = [c["seconds"] for c in run["guard"]["checks"]]
    per_check, per_update = sum(checks) / len(checks), run["train_seconds"] / steps
    demo_checks = len(range(0, demo.steps + 1, demo.guard.every)) + (demo.steps % demo.guard.every != 0)
    return {"steps": steps, "check_seconds": checks, "train_seconds": run["train_seconds"],
            "seconds_per_check": per_check, "seconds_per_update": per_update,
            "images_per_check": demo.guard.num_images, "guard_num_steps": demo.guard.num_steps,
            "run_overhead": run["overhead"], "demo_checks": demo_checks, "demo_updates": demo.steps,
            "demo_overhead": demo_checks * per_check / (demo.steps * per_update)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, choices=["directions", "hacking", "overhead"])
    parser.add_argument("--directions", nargs="*", default=list(DIRECTIONS), choices=list(DIRECTIONS))
    parser.add_argument("--steps-hacking", type=int, default=40)
    parser.add_argument("--steps-overhead", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-scale", type=float, default=1.0,
                        help="directions: the demo's learning rate times this (the guard is not tuned to one)")
    parser.add_argument("--anchor-pull", type=float, default=None,
                        help="directions: the guard's anchor_pull, as --guard-setting anchor_pull=P "
                             "(the demo leaves it at 0)")
    parser.add_argument("--world-seed", type=int, default=None,
                        help="bootstrap the world with this training seed when $SRPO_CACHE has none (use a fresh "
                             "$SRPO_CACHE: another bootstrap of the world)")
    parser.add_argument("--guard-setting", nargs="*", default=[], metavar="KEY=VALUE",
                        help="directions: override settings of the demo's guard block (YAML values)")
    parser.add_argument("--content-weight", type=float, default=None,
                        help="directions, hacking: train.content_weight (the reward on the plain prompt's weight; "
                             "default: the demo's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    only = args.only or ["directions", "hacking", "overhead"]
    result = {"benchmark": "guard", "seed": args.seed, "world_seed": args.world_seed,
              "content_weight": args.content_weight}
    if "overhead" in only:
        with tempfile.TemporaryDirectory() as tmp:
            result["overhead"] = run_overhead(args.steps_overhead, args.seed, Path(tmp))
    if {"directions", "hacking"} & set(only):
        ensure_world(biased="hacking" in only, seed=args.world_seed)
    if "directions" in only:
        settings = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.guard_setting)}
        if args.anchor_pull is not None:  # the trust region the recoveries tighten (a trial: the demo leaves it off)
            settings["anchor_pull"] = args.anchor_pull
        result["directions"] = run_directions(args.directions, args.seed, args.lr_scale, settings, args.content_weight)
        result["guard_settings"] = settings
        result["lr_scale"] = args.lr_scale
        if args.anchor_pull is not None:
            result["anchor_pull"] = args.anchor_pull
    if "hacking" in only:
        result["hacking"] = run_hacking(args.steps_hacking, args.seed, args.content_weight)
    result.update(seconds=time.perf_counter() - start, machine=machine())
    emit(result)
    return result


if __name__ == "__main__":
    main()
