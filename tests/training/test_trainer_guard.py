"""The guard inside the trainer: it never changes what training computes, it stops, selects and resumes."""

import json
from types import SimpleNamespace

import pytest
import torch

from srpo.config import GuardConfig, GuardRule, RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.training.guard import Guard
from srpo.training.trainer import SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)
PROMPTS = ["a green circle", "a tiny red square", "a blue triangle"]


@pytest.fixture(scope="module")
def reward():
    return load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))


def train_cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "max_grad_norm": 1.0,
                          "num_injections": 2, "discount": "linear", **overrides})


def guard(cfg: TrainConfig, metrics) -> Guard:
    prompts, seeds = cfg.guard.prompts_and_seeds(PROMPTS)
    return Guard(cfg.guard, metrics, prompts, seeds)


def brightness(images, prompts):  # a metric the tests can steer through the rules
    return images.mean(dim=(1, 2, 3))


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.policy.transformer.state_dict().items()}


def run(policy_cfg, reward, rollouts, cfg, metrics=None, out=None):
    trainer = SRPOTrainer(load_policy(policy_cfg), reward, rollouts, cfg, ROLLOUT,
                          guard=guard(cfg, metrics) if cfg.guard else None)
    trainer.train()
    if out is not None:
        trainer.save(out)
    return trainer


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_guarded_run_trains_bit_for_bit_like_an_unguarded_one(policy_cfg, reward, rollouts, finetune):
    extra = {"finetune": finetune, "lora_rank": 4, "lora_dropout": 0.5} if finetune == "lora" else {}
    plain = run(policy_cfg, reward, rollouts, train_cfg(steps=2, **extra))
    # the guard renders the training's own prompts too: their cached encodings must not change
    # every 2: the early check at 1 and the default selection keep weights (recoveries on: no rule breaks)
    watched = train_cfg(guard=GuardConfig(every=2, prompts=list(rollouts.prompts[:2]), batch_size=1,
                                          num_steps=2, metrics=["reward", "brightness"]),
                        steps=2, **extra)
    guarded = run(policy_cfg, reward, rollouts, watched, {"reward": reward_metric(reward), "stats": stats})
    assert [h.loss for h in guarded.history] == [h.loss for h in plain.history]
    a, b = weights(plain), weights(guarded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [c.step for c in guarded.guard.guard.history] == [0, 1, 2]


def reward_metric(reward):
    return lambda images, prompts: reward.score(images, prompts)


def stats(images, prompts):
    from srpo.image_stats import image_statistics

    return image_statistics(images, ["brightness"])


def test_a_stop_rule_ends_the_run_and_the_selected_weights_are_published(policy_cfg, reward, rollouts, tmp_path):
    # a drift of 0 with no margin can only hold at the base check: the first trained check breaks it and stops
    cfg = train_cfg(steps=5, guard=GuardConfig(every=2, num_prompts=2, batch_size=2, num_steps=2, margin=0,
                                               recoveries=0, early_check=False,
                                               metrics=["brightness_metric"],
                                               rules={"brightness_metric": GuardRule(drift=0.0, action="stop")}))
    base = {k: v.clone() for k, v in load_policy(policy_cfg).transformer.state_dict().items()}
    trainer = run(policy_cfg, reward, rollouts, cfg, {"brightness_metric": brightness}, tmp_path / "out")
    assert len(trainer.history) == 2  # stopped at the first trained check, not after 5 updates
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert log["guard"]["stopped"].startswith("update 2")
    assert log["guard"]["selected_update"] == 0 and log["published_update"] == 0
    saved = load_policy(policy_cfg, transformer=str(tmp_path / "out"))
    published = {k: v for k, v in saved.transformer.state_dict().items()}
    assert all(torch.equal(published[k], base[k]) for k in base)  # the base model's weights, not update 2's


def test_a_resumed_guarded_run_equals_an_uninterrupted_one(policy_cfg, reward, rollouts, tmp_path):
    def cfg(folder, steps):
        return train_cfg(steps=steps, finetune="lora", lora_rank=4, checkpoint_every=2, checkpoint_dir=str(folder),
                         guard=GuardConfig(every=2, num_prompts=2, batch_size=2, num_steps=2,
                                           metrics=["brightness_metric"], select="last_ok",
                                           rules={"brightness_metric": GuardRule(drift=0.002, action="warn")}))

    metrics = {"brightness_metric": brightness}
    whole = run(policy_cfg, reward, rollouts, cfg(tmp_path / "a", 4), metrics, tmp_path / "whole")
    run(policy_cfg, reward, rollouts, cfg(tmp_path / "b", 2), metrics)  # interrupted after 2 updates
    resumed = run(policy_cfg, reward, rollouts, cfg(tmp_path / "b", 4), metrics, tmp_path / "resumed")
    assert [c.to_json() | {"seconds": 0} for c in resumed.guard.guard.history] == \
        [c.to_json() | {"seconds": 0} for c in whole.guard.guard.history]
    a, b = (json.loads((tmp_path / d / "training_log.json").read_text()) for d in ("whole", "resumed"))
    assert a["published_update"] == b["published_update"]
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / d / "pytorch_lora_weights.safetensors") for d in ("whole", "resumed"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("positive, negative, off", [("dark", "bright", ["brightness"]),
                                                     ("vivid", "muted", ["saturation"])])
def test_the_demo_guard_block_follows_swapped_words(policy_cfg, reward, rollouts, positive, negative, off):
    """configs/shapes_demo.yaml with only the words changed compiles and runs with its guard block as written."""
    from pathlib import Path

    import yaml

    from srpo.world.guard_metrics import build_world_guard_metrics

    demo = yaml.safe_load((Path(__file__).parents[2] / "configs" / "shapes_demo.yaml").read_text())["parameters"]
    cfg = TrainConfig(**{**demo["train"], "positive_words": [positive], "negative_words": [negative]})
    assert cfg.guard == TrainConfig(**demo["train"]).guard  # the same block for every direction
    cfg = cfg.model_copy(update={"steps": 2, "batch_size": 2, "num_injections": 1})
    from srpo.world.shapes import all_base_prompts

    prompts, seeds = cfg.guard.prompts_and_seeds(all_base_prompts()[45:])
    guard = Guard(cfg.guard, build_world_guard_metrics(cfg.guard, reward=reward), prompts, seeds)
    trainer = SRPOTrainer(load_policy(policy_cfg), reward, rollouts, cfg, ROLLOUT, guard=guard)
    trainer.train()
    assert guard.words == ([positive], [negative])  # taken from the trainer: the guard block names no words
    assert guard.steered == off and all(set(c.within) == set(cfg.guard.rules) - set(off) for c in guard.history)
    assert [c.step for c in guard.history] == [0, 2]
    assert all("objective" in c.values and c.errors["world.colours"] >= 0 for c in guard.history)
    assert guard.selected_step in (0, 2)


# ---- recovery: rewind to the selection at a lower learning rate (issue 24) ------------------------------------
#: the 'fid' value of each check in order: checks 0 and 1 within, 2 outside (a rewind to 1), then within again
FID = [0.9, 0.9, 0.7, 0.9, 0.9, 0.9, 0.9]


def recovering(policy_cfg, reward, rollouts, folder=None, steps=5, **extra):
    """A run whose guard reads ``FID`` check by check (the metric looks at the guard's history, so a resumed run
    reads the same values): the check at update 2 is not publishable and the run goes back to update 1."""
    cfg = train_cfg(steps=steps, checkpoint_every=1 if folder else 0, checkpoint_dir=str(folder) if folder else None,
                    guard=GuardConfig(every=1, num_prompts=2, batch_size=2, num_steps=2, margin=0, metrics=["fid"],
                                      select="last_ok", rules={"fid": GuardRule(drop=0.1, action="stop")}),
                    **extra)
    prompts, seeds = cfg.guard.prompts_and_seeds(PROMPTS)
    box = {}
    fid = lambda images, prompts: torch.full((len(prompts),), FID[len(box["guard"].history)])  # noqa: E731
    box["guard"] = Guard(cfg.guard, {"fid": fid}, prompts, seeds)
    return SRPOTrainer(load_policy(policy_cfg), reward, rollouts, cfg, ROLLOUT, guard=box["guard"])


#: The recovering runs' fine-tuning: LoRA with dropout, so the resumed run below must restore its draws too.
RECOVERING = {"full": {}, "lora": {"finetune": "lora", "lora_rank": 4, "lora_dropout": 0.5}}


@pytest.fixture(scope="module")
def recovered(policy_cfg, reward, rollouts):
    """``finetune`` -> the uninterrupted 5-update recovering run (no checkpoints), trained once for the tests
    below: its trainer, its trainable weights after each update (``after_update[n]``: after update n) and,
    right after the rewind, the weights, learning rates and AdamW's number of moments (``after_rewind``)."""
    runs = {}

    def get(finetune: str) -> SimpleNamespace:
        if finetune not in runs:
            trainer = recovering(policy_cfg, reward, rollouts, **RECOVERING[finetune])
            after_update, after_rewind = {}, {}
            recover = trainer.guard.recover

            def watched_recover(check, load_state, optimizer):
                recover(check, load_state, optimizer)
                after_rewind.update({k: v.clone() for k, v in trainer.trainable_state().items()})
                after_rewind["lr"] = [g["lr"] for g in trainer.optimizer.param_groups]
                after_rewind["moments"] = len(getattr(trainer.optimizer, "optimizer", trainer.optimizer).state)

            trainer.guard.recover = watched_recover
            trainer.train(on_step=lambda e: after_update.setdefault(
                e.step + 1, {k: v.clone() for k, v in trainer.trainable_state().items()}))
            runs[finetune] = SimpleNamespace(trainer=trainer, after_update=after_update, after_rewind=after_rewind)
        return runs[finetune]

    return get


@pytest.mark.parametrize("finetune", list(RECOVERING))
def test_a_check_past_the_tolerance_rewinds_to_the_selected_weights_at_a_lower_learning_rate(recovered, finetune):
    run = recovered(finetune)
    trainer, after_update, after_rewind = run.trainer, run.after_update, dict(run.after_rewind)
    guard = trainer.guard.guard
    assert [c.step for c in guard.history] == [0, 1, 2, 3, 4, 5] and len(trainer.history) == 5
    assert [c.rewind for c in guard.history] == [None, None, 1, None, None, None]
    assert [c.lr_scale for c in guard.history] == [1, 1, 0.5, 0.5, 0.5, 0.5]
    assert guard.stopped is None and guard.selected_step == 5
    lr = trainer.cfg.learning_rate
    assert after_rewind.pop("lr") == [lr * 0.5] * len(trainer.optimizer.param_groups)
    assert after_rewind.pop("moments") == 0  # AdamW's moments start again
    kept = after_update[1]  # the weights of update 1, the selection when update 2 failed
    assert after_rewind.keys() == kept.keys() and all(torch.equal(after_rewind[k], kept[k]) for k in kept)
    assert not all(torch.equal(after_update[2][k], kept[k]) for k in kept)  # update 2 had moved them
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [lr * 0.5] * len(trainer.optimizer.param_groups)
    assert guard.summary()["recoveries"] == [{"at": 2, "to": 1, "lr_scale": 0.5}]


def test_a_run_resumed_in_the_middle_of_a_recovery_equals_the_uninterrupted_one(policy_cfg, reward, rollouts,
                                                                                 recovered, tmp_path):
    # 5 updates: check 2 rewinds to update 1, the run stops after the update that follows, three are left.
    # The whole run wrote no checkpoints: the resumed one equals it only if checkpointing changes nothing and
    # the resume is exact (that a same-seed run repeats itself is tests/training/test_trainer.py's same-seed test).
    whole = recovered("lora").trainer

    class Interrupt(Exception):
        pass

    def interrupt(entry):
        if entry.step == 2:  # the update after the rewind (the checkpoint at 2 was written after it)
            raise Interrupt

    first = recovering(policy_cfg, reward, rollouts, tmp_path / "b", **RECOVERING["lora"])
    with pytest.raises(Interrupt):
        first.train(on_step=interrupt)
    assert first.guard.guard.history[-1].rewind == 1
    resumed = recovering(policy_cfg, reward, rollouts, tmp_path / "b", **RECOVERING["lora"])
    resumed.train()
    assert len(resumed.history) == 5
    strip = lambda g: [c.to_json() | {"seconds": 0} for c in g.guard.guard.history]  # noqa: E731
    assert strip(resumed) == strip(whole)
    assert [h.loss for h in resumed.history] == [h.loss for h in whole.history]
    a, b = whole.trainable_state(), resumed.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_recoveries_tighten_a_trust_region_towards_the_start(policy_cfg, reward, rollouts, recovered):
    """anchor_pull: after a recovery each update takes back pull x recoveries of the distance to the start."""
    trainer = recovering(policy_cfg, reward, rollouts, steps=3)
    trainer.guard.guard.cfg = trainer.guard.guard.cfg.model_copy(update={"anchor_pull": 0.25})
    trainer.step_fn.anchor()  # as the trainer does when the config asks for it
    start = {k: v.clone() for k, v in trainer.trainable_state().items()}
    pulls = []
    trainer.train(on_step=lambda e: pulls.append(trainer.step_fn.pull))
    assert pulls == [0.0, 0.0, 0.25]  # the recovery at update 2 set it for the updates after
    # the same run without the trust region, after its update 3 (the run's length does not change its updates)
    a, b = trainer.trainable_state(), recovered("full").after_update[3]
    distance = lambda w: sum(float((w[k] - start[k]).pow(2).sum()) for k in start)  # noqa: E731
    assert distance(a) < distance(b)  # update 3 pulled a quarter of the way back
