"""The training guard on the shapes world: what a guarded run publishes against what training ends with.

    python -m benchmarks.guard [--only steering hacking] [--steps-steering 60] [--steps-hacking 40]

Two settings where plain training goes too far (issue 13):

- ``steering``: SRPO with the demo's settings, steered towards "vivid" (vs "muted") instead of the
  demo's "bright": the steered share saturates within ~20 updates, then colour fidelity falls
  and the plain prompt's reward with it. Guard: colour fidelity on held-out prompts
  (``world.colours``, at most 5 points below its start, patience 2), on 45 images (15 held-out
  prompts x 3 seeds): with 8 images (one per prompt) a 12-point fall on the benchmark's images
  stayed invisible to the guard until update 60.
- ``hacking``: the planted-saturation reward of ``benchmarks.hacking`` (``shapes-clip-biased``)
  trained with plain Direct-Align towards "bright" (SGP, no SRP): it drags saturation along.
  Guard: an image statistic only, the mean HSV saturation's drift from the base model's images
  (at most 0.05).

The guard's actions are ``warn``, so each run trains all its updates: the final weights are the
unguarded run's, bit for bit (the guard never touches training's random streams), and the
weights the selection rule (``last_ok``) kept are the guarded run's published model. Both are
measured on the benchmarks' 120 images (60 prompts x 2 fixed seeds; the guard's own 15 held-out
prompts are other prompts and seeds). ``overhead``: guard seconds / training seconds in the run.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from benchmarks.common import emit, machine
from benchmarks.world import ensure_world
from srpo.config import GuardConfig, GuardRule, PolicyConfig, RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig, load_reward
from srpo.world.experiments import Setting, make_rollouts, measure_policy
from srpo.world.report import WorldReportConfig
from srpo.world.shapes import all_base_prompts

COMMON = dict(batch_size=8, num_injections=2, loss="linear", learning_rate=3e-5, max_grad_norm=1.0, guidance=3.5)
GUARD = dict(every=5, batch_size=8, select="last_ok")


def settings(steps_steering: int, steps_hacking: int) -> dict[str, dict]:
    return {
        "steering": dict(
            reward="shapes-clip", words=(["vivid"], "muted"),
            train=TrainConfig(method="srpo", steps=steps_steering, discount="linear", reward_form="weighted",
                              positive_words=["vivid"], negative_words=["muted"], **COMMON),
            guard=GuardConfig(metrics=["reward", "world.vivid_share", "world.colours"], num_prompts=15,
                              seeds_per_prompt=3,  # 45 images: one image changes the fidelity by 2.2 points
                              rules={"world.colours": GuardRule(drop=0.05, patience=2, action="warn")}, **GUARD)),
        "hacking": dict(
            reward="shapes-clip-biased", words=(["bright"], "dark"),
            train=TrainConfig(method="direct_align", steps=steps_hacking, inversion=False, discount="none",
                              reward_form="sgp", positive_words=["bright"], negative_words=[], **COMMON),
            guard=GuardConfig(metrics=["reward", "saturation", "world.bright_share", "world.vivid_share"],
                              rules={"saturation": GuardRule(drift=0.05, patience=1, action="warn")}, **GUARD)),
    }


def gains(after: dict, before: dict) -> dict:
    return {"target_gain": after["steered_share"] - before["steered_share"],
            "bias_gain": after["vivid_share"] - before["vivid_share"],
            "fidelity": after["colours"], "fidelity_change": after["colours"] - before["colours"],
            "reward_change": after["reward"] - before["reward"]}


def run_setting(name: str, spec: dict, seed: int) -> dict:
    """Train once with the guard; measure the base, the final (unguarded) and the selected (published) weights."""
    from srpo.models.families import load_policy
    from srpo.training.guard import Guard
    from srpo.training.trainer import SRPOTrainer
    from srpo.world.guard_metrics import build_world_guard_metrics

    policy_cfg = PolicyConfig(pretrained="builtin:shapes-flux", height=64, width=64, device="cpu")
    rollout = RolloutConfig(num_steps=25, guidance=3.5, seed=seed)
    reward = load_reward(RewardConfig(name="hf_clip", checkpoint=f"builtin:{spec['reward']}"))
    prompts = all_base_prompts()
    setting = Setting(policy_cfg, rollout, reward, make_rollouts(policy_cfg, rollout, prompts[:45]),
                      WorldReportConfig(samples_per_prompt=2))
    positive, negative = spec["words"]
    train = spec["train"].model_copy(update={"seed": seed, "guard": spec["guard"]})
    guard_prompts, guard_seeds = train.guard.prompts_and_seeds(prompts[45:])  # 15 prompts training never sees
    policy = load_policy(policy_cfg)
    before = measure_policy(policy, setting, positive, negative)
    guard = Guard(train.guard, build_world_guard_metrics(train.guard, reward=reward), guard_prompts, guard_seeds)
    trainer = SRPOTrainer(policy, reward, setting.rollouts, train, rollout, guard=guard)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    policy.transformer.eval()
    final = measure_policy(policy, setting, positive, negative)
    summary = guard.summary()
    selected = summary["selected_update"]
    trainer.guard.finish(trainer.processes.load_model_state_from_main, len(trainer.history))
    published = final if selected in (None, train.steps) else measure_policy(policy, setting, positive, negative)
    result = {"name": name, "reward": spec["reward"], "steered": positive[0], "steps": train.steps,
              "selected_update": selected, "unguarded": gains(final, before), "guarded": gains(published, before),
              "guard_seconds": summary["seconds"], "train_seconds": seconds - summary["seconds"],
              "overhead": summary["seconds"] / max(seconds - summary["seconds"], 1e-9),
              "checks": [{"step": c["step"], "ok": all(c["within"].values()), **c["values"]} for c in summary["checks"]],
              "before": before, "after_unguarded": final, "after_guarded": published}
    logging.getLogger(__name__).info("%s: selected update %s; unguarded %s; guarded %s; overhead %.2f", name, selected,
                                     result["unguarded"], result["guarded"], result["overhead"])
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, choices=["steering", "hacking"])
    parser.add_argument("--steps-steering", type=int, default=60)
    parser.add_argument("--steps-hacking", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    ensure_world(biased=not args.only or "hacking" in args.only)
    runs = [run_setting(name, spec, args.seed) for name, spec in settings(args.steps_steering, args.steps_hacking).items()
            if not args.only or name in args.only]
    result = {"benchmark": "guard", "settings": runs, "seed": args.seed, "images": 120,
              "seconds": time.perf_counter() - start, "machine": machine()}
    emit(result)
    return result


if __name__ == "__main__":
    main()
