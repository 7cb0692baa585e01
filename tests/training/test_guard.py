"""The training guard: rules with patience, selection, resume, sharding, RNG isolation, kept weights."""

import json
import math

import pytest
import torch
from pydantic import ValidationError

from srpo.config import GuardConfig, TrainConfig
from srpo.training.guard import CandidateKeeper, Guard, merge_shards, policy_image_generator, shard

PROMPTS = [f"prompt {i}" for i in range(7)]
SEEDS = [100 + i for i in range(7)]


def fake_generator(level: dict, seen: list | None = None):
    """Images whose pixels are ``level["x"]`` plus seeded noise: the 'policy' the tests move by hand."""

    def generate(prompts, seeds):
        if seen is not None:
            seen.append(list(prompts))
        noise = torch.stack([torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return (level["x"] + 0.1 * noise).clamp(0, 1)  # [N, 3, 8, 8]

    return generate


def fake_metrics():
    """'reward' rises with the level; 'quality' falls once the level passes 0.5 (the hack; the noise adds 0.05)."""
    return {"reward": lambda im, p: im.mean((1, 2, 3)),
            "pair": lambda im, p: {"quality": 1 - (im.mean((1, 2, 3)) - 0.55).clamp_min(0) * 4,
                                   "unused": torch.zeros(len(p))}}


def make_guard(select="last_ok", patience=2, action="stop", **kw):
    cfg = GuardConfig(every=1, metrics=["reward", "quality"], select=select,
                      rules={"quality": {"drop": 0.5, "patience": patience, "action": action}})
    return Guard(cfg, fake_metrics(), PROMPTS, SEEDS, **kw)


def run_levels(guard, levels, start=0):
    level, out = {"x": 0.0}, []
    for step, x in enumerate(levels, start):
        level["x"] = x
        out.append(guard.check(step, fake_generator(level)))
    return out


LEVELS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9]  # quality leaves its band (drop 0.5) above level 0.625


def test_rules_patience_and_stop():
    checks = run_levels(make_guard(patience=2), LEVELS)
    within = [c.within["quality"] for c in checks]
    assert within[:4] == [True] * 4 and not any(within[4:])
    assert [c.streaks["quality"] for c in checks][3:7] == [0, 1, 2, 3]
    # patience 2: the first failing check is tolerated, the second stops
    assert [c.decision for c in checks][3:6] == ["ok", "ok", "stop"]
    assert "quality" in checks[5].reasons[0] and "stop" in checks[5].reasons[0]
    low, high = checks[0].bounds["quality"]
    assert low == pytest.approx(checks[0].values["quality"] - 0.5) and math.isinf(high)


def test_warn_does_not_stop_and_a_recovery_resets_patience():
    guard = make_guard(patience=1, action="warn")
    checks = run_levels(guard, [0.3, 0.8, 0.3, 0.8])
    assert [c.decision for c in checks] == ["ok", "warn", "ok", "warn"]
    assert [c.streaks["quality"] for c in checks] == [0, 1, 0, 1]
    assert not guard.should_stop


@pytest.mark.parametrize("select, expected", [("last_ok", 3), ("best_reward_ok", 3), ("last", 7)])
def test_selection(select, expected):
    guard = make_guard(select=select, patience=10)
    checks = run_levels(guard, LEVELS)
    assert guard.selected().step == expected
    assert [c.step for c in checks if c.selected][-1] == expected
    if select != "last":  # the selection never moves to a check outside its tolerance
        assert all(c.ok for c in checks if c.selected)
    assert any(map(guard.needs_snapshot, checks)) == (select != "last")  # "last" publishes the final weights


def test_best_reward_ok_keeps_the_best_not_the_last():
    guard = make_guard(select="best_reward_ok", patience=10)
    run_levels(guard, [0.3, 0.6, 0.4, 0.45])  # all within tolerance; the reward peaks at update 1
    assert guard.selected().step == 1
    last_ok = make_guard(select="last_ok", patience=10)
    run_levels(last_ok, [0.3, 0.6, 0.4, 0.45])
    assert last_ok.selected().step == 3


def test_resumed_guard_continues_as_if_not_stopped():
    whole = make_guard(select="best_reward_ok", patience=3)
    run_levels(whole, LEVELS)
    first = make_guard(select="best_reward_ok", patience=3)
    run_levels(first, LEVELS[:5])  # interrupted inside a failing streak
    state = json.loads(json.dumps(first.state_dict()))  # through a checkpoint's JSON
    resumed = make_guard(select="best_reward_ok", patience=3)
    resumed.load_state_dict(state)
    run_levels(resumed, LEVELS[5:], start=5)

    def strip(g):
        return [{k: v for k, v in c.to_json().items() if k != "seconds"} for c in g.history]

    assert strip(resumed) == strip(whole)
    assert (resumed.selected_step, resumed.stopped) == (whole.selected_step, whole.stopped)
    assert whole.stopped is not None
    other = Guard(whole.cfg, fake_metrics(), PROMPTS[:3], SEEDS[:3])
    with pytest.raises(ValueError, match="other prompts or seeds"):
        other.load_state_dict(state)


def test_due_at_zero_every_k_and_the_end():
    guard = Guard(GuardConfig(every=3, metrics=["reward"]), fake_metrics(), PROMPTS, SEEDS)
    assert [s for s in range(9) if guard.due(s, total=8)] == [0, 3, 6, 8]
    run_levels(guard, [0.3])
    assert not guard.due(0, total=8)


@pytest.mark.parametrize("n, world", [(7, 3), (2, 4), (8, 2), (1, 1)])
def test_shards_cover_the_prompts_once_in_order(n, world):
    items = list(range(n))
    parts = [shard(items, r, world) for r in range(world)]
    assert [x for p in parts for x in p] == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    merged = merge_shards([{"m": [float(x) for x in p]} for p in parts])
    assert merged["m"] == [float(x) for x in items]


@pytest.mark.parametrize("world", [3, 9])  # 9 ranks for 7 prompts: two ranks only pad
def test_distributed_check_equals_one_process(world):
    level = {"x": 0.4}
    single = make_guard().check(0, fake_generator(level))
    objects, seen = {}, []
    for rank in range(world):  # each rank's scores, as an all-gather would collect them
        recorder = make_guard(rank=rank, world=world, gather=lambda o, r=rank: objects.__setitem__(r, o) or [o])
        recorder.check(0, fake_generator(level, seen))
    sizes = [len(shard(PROMPTS, r, world)) for r in range(world)]
    assert [p for part, n in zip(seen, sizes) for p in part[:n]] == PROMPTS  # every prompt by one rank
    assert len({len(part) for part in seen}) == 1  # padded to the same count (FSDP's collectives)
    gathered = [make_guard(rank=r, world=world, gather=lambda o: [objects[k] for k in range(world)])
                .check(0, fake_generator(level)) for r in range(world)]
    for check in gathered:
        assert check.values == pytest.approx(single.values)
    with pytest.raises(ValueError, match="needs a gather function"):
        make_guard(rank=0, world=2)


def test_missing_metric_is_named():
    cfg = GuardConfig(metrics=["reward", "pickscore"])
    guard = Guard(cfg, fake_metrics(), PROMPTS, SEEDS)
    with pytest.raises(ValueError, match="'pickscore'.*none of the guard's metric functions"):
        guard.check(0, fake_generator({"x": 0.3}))


def test_config_errors_name_the_setting():
    with pytest.raises(ValidationError, match="exactly one of drop"):
        GuardConfig(rules={"reward": {"drop": 0.1, "drift": 0.2}})
    with pytest.raises(ValidationError, match="rule for 'hf'"):
        GuardConfig(rules={"hf": {"drift": 0.1}})
    with pytest.raises(ValidationError, match="best_reward_ok.*lacks 'reward'"):
        GuardConfig(metrics=["contrast"], select="best_reward_ok")
    with pytest.raises(ValidationError, match="names 'reward' twice"):
        GuardConfig(metrics=["reward", "reward"])
    with pytest.raises(ValidationError, match="2 seeds for 3 prompts"):
        GuardConfig(prompts=["a", "b", "c"], seeds=[1, 2])
    assert TrainConfig().guard is None
    assert TrainConfig(guard={"every": 2}).guard.every == 2
    prompts, seeds = GuardConfig(num_prompts=2).prompts_and_seeds(["a", "b", "c"])
    assert prompts == ["a", "b"] and len(set(seeds)) == 2
    with pytest.raises(ValueError, match="train.guard has no prompts"):
        GuardConfig().prompts_and_seeds([])


def test_several_seeds_per_prompt_give_each_image_its_own_seed():
    prompts, seeds = GuardConfig(num_prompts=2, seeds_per_prompt=3).prompts_and_seeds(["a", "b", "c"])
    assert prompts == ["a"] * 3 + ["b"] * 3 and len(set(seeds)) == 6
    one, one_seeds = GuardConfig(num_prompts=2).prompts_and_seeds(["a", "b", "c"])
    assert seeds[0] == one_seeds[0]  # the first image of a prompt keeps seed + 7919 i numbering
    with pytest.raises(ValidationError, match="seeds is given with seeds_per_prompt 2"):
        GuardConfig(prompts=["a"], seeds=[1], seeds_per_prompt=2)


def test_relative_and_drift_bounds():
    from srpo.config import GuardRule

    assert GuardRule(relative_drop=0.1).bounds(-2.0) == (pytest.approx(-2.2), math.inf)
    assert GuardRule(drift=0.5).bounds(1.0) == (0.5, 1.5)
    assert GuardRule(relative_drift=0.5).bounds(-2.0) == (-3.0, -1.0)


def test_a_check_leaves_the_training_random_streams_alone(policy_cfg):
    from srpo.models.families import load_policy
    from srpo.training.lora import add_lora

    policy = load_policy(policy_cfg)
    add_lora(policy.transformer, 4, 4.0, ["to_q", "to_k"], dropout=0.5, seed=0)
    policy.transformer.train()  # LoRA dropout would draw from the global generator
    generate = policy_image_generator(policy, 32, 32, num_steps=2, shift=3.0, guidance=1.0, batch_size=2)
    guard = Guard(GuardConfig(metrics=["brightness"]),
                  {"b": lambda im, p: {"brightness": im.mean((1, 2, 3))}}, PROMPTS[:3], SEEDS[:3])
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = guard.check(0, generate)
    assert torch.equal(torch.get_rng_state(), before)
    assert policy.transformer.training  # the mode is restored
    images = generate(PROMPTS[:3], SEEDS[:3])
    assert images.shape == (3, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert guard.check(1, generate).values == first.values  # fixed noise: the same images again
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("in_folder", [False, True])
def test_candidate_keeper_restores_the_kept_weights(tmp_path, in_folder):
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    keeper = CandidateKeeper(tmp_path / "cand" if in_folder else None)
    adapter = {k: v for k, v in module.state_dict().items() if k.startswith("1.")}  # a subset, like LoRA's
    kept = {k: v.clone() for k, v in adapter.items()}
    keeper.keep(3, adapter)
    assert (keeper._state is None) == in_folder  # in a folder: no copy held in memory
    assert all(v.device.type == "cpu" for v in keeper.state().values())
    frozen = module[0].weight.detach().clone()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)  # training moves on
    assert keeper.restore(module) == 3
    for k, v in kept.items():
        assert torch.equal(module.state_dict()[k], v)
    assert torch.equal(module[0].weight, frozen + 1.0)  # what was not kept is left alone
    keeper.save(tmp_path / "ckpt.safetensors")  # through a checkpoint
    again = CandidateKeeper()
    again.load(tmp_path / "ckpt.safetensors", 3)
    assert again.step == 3 and all(torch.equal(again.state()[k], kept[k]) for k in kept)
    with pytest.raises(ValueError, match="tensors the module lacks"):
        again.restore(torch.nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match="no candidate kept"):
        CandidateKeeper().state()


def test_scalars_summary_and_curves():
    from srpo.world.plots import guard_curves

    guard = make_guard(patience=10)
    run_levels(guard, LEVELS)
    scalars = guard.scalars()
    assert scalars["guard/selected_update"] == 3 and scalars["guard/quality_within"] == 0.0
    assert all(isinstance(v, float) for v in scalars.values())
    summary = json.loads(json.dumps(guard.summary()))
    assert [c["step"] for c in summary["checks"]] == list(range(len(LEVELS)))
    assert summary["selected_update"] == 3 and summary["checks"][0]["bounds"]["quality"][1] is None
    png = guard_curves(summary)
    assert png.width >= 2 * 360 and png.height >= 220  # two metrics, one row
    pixels = torch.tensor(list(png.getdata()))
    assert ((pixels == torch.tensor([150, 150, 150])).all(1)).any()  # the tolerance band is drawn
    assert ((pixels == torch.tensor([44, 160, 44])).all(1)).any()  # so is the selected update


def test_world_and_suite_guard_metrics_from_config():
    from srpo.evaluation.guard_metrics import build_guard_metrics
    from srpo.image_stats import image_statistics
    from srpo.world.grader import fidelity, grade, shares
    from srpo.world.guard_metrics import build_world_guard_metrics
    from srpo.world.shapes import draw

    images, caps, _ = draw(40, seed=3, attribute_prob=0.5)
    names = ["colourfulness", "hf_energy", "world.colours", "world.brightness", "world.vivid_share"]
    cfg = GuardConfig(metrics=names, rules={"world.colours": {"drop": 0.1}})
    guard = Guard(cfg, build_world_guard_metrics(cfg), caps, list(range(len(caps))))
    check = guard.check(0, lambda prompts, seeds: images[: len(prompts)])
    graded = grade(images)
    assert check.values["world.colours"] == pytest.approx(fidelity(graded, caps)["colours"])
    assert check.values["world.brightness"] == pytest.approx(fidelity(graded, caps)["brightness"])  # named only
    assert check.values["world.vivid_share"] == pytest.approx(shares(graded)["vivid"])
    assert check.values["colourfulness"] == pytest.approx(float(image_statistics(images)["colourfulness"].mean()))
    for bad, message in [("world.hue", "not a shapes-world guard metric"), ("geneval", "runs outside this process"),
                         ("sharpnes", "unknown metric 'sharpnes'")]:
        with pytest.raises(ValueError, match=message):
            build_world_guard_metrics(GuardConfig(metrics=[bad]))
    with pytest.raises(ValueError, match="world.colours.*no world metrics were built"):
        build_guard_metrics(GuardConfig(metrics=["world.colours"]))
    with pytest.raises(ValueError, match="no training reward model"):
        build_guard_metrics(GuardConfig(metrics=["reward"]))


def test_the_training_reward_scores_the_plain_prompt():
    from srpo.evaluation.guard_metrics import build_guard_metrics
    from srpo.rewards import RewardConfig, load_reward

    reward = load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))
    cfg = GuardConfig(metrics=["reward", "contrast"])
    metrics = build_guard_metrics(cfg, reward=reward)
    images, prompts = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)), ["a", "b", "c"]
    check = Guard(cfg, metrics, prompts, [0, 1, 2]).check(0, lambda p, s: images)
    assert check.values["reward"] == pytest.approx(float(reward.score(images, prompts).mean()), rel=1e-5)
    assert set(check.values) == {"reward", "contrast"}
    assert all(math.isfinite(v) for v in check.values.values())


def test_runner_keeps_the_selection_resumes_and_publishes_it(tmp_path):
    from srpo.training.guard import GuardRunner

    module = torch.nn.Linear(3, 1)
    level = {"x": 0.0}

    def run(runner, levels, start):
        for step, x in enumerate(levels, start):
            level["x"] = x  # the 'policy' after `step` updates
            with torch.no_grad():
                module.weight.fill_(x)
            runner.maybe_check(step, len(LEVELS) - 1, module.state_dict)
            if runner.should_stop:
                return step
        return step

    runner = GuardRunner(make_guard(patience=2), fake_generator(level))
    run(runner, LEVELS[:3], 0)
    assert runner.keeper.step == 2
    (tmp_path / "ckpt").mkdir()
    runner.save_candidate(tmp_path / "ckpt" / GuardRunner.CANDIDATE_FILE)
    state = json.loads(json.dumps(runner.state_dict()))
    resumed = GuardRunner(make_guard(patience=2), fake_generator(level))
    with pytest.raises(FileNotFoundError, match="is missing"):
        resumed.load_state_dict(state, tmp_path / "nothing.safetensors")
    resumed.load_state_dict(state, tmp_path / "ckpt" / GuardRunner.CANDIDATE_FILE)
    stopped_at = run(resumed, LEVELS[3:], 3)
    assert stopped_at == 5 and resumed.guard.selected_step == 3  # out of tolerance from update 4
    assert resumed.finish(lambda state: module.load_state_dict(state, strict=False), stopped_at) == 3
    assert torch.equal(module.weight, torch.full((1, 3), LEVELS[3]))  # the published weights are update 3's
