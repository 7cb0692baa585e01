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


def make_guard(select="last_ok", patience=2, action="stop", recoveries=0, **kw):
    cfg = GuardConfig(every=1, metrics=["reward", "quality"], select=select, recoveries=recoveries,
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
    assert scalars["guard/quality_used"] > 1  # the last check is past its tolerance
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
    cfg = GuardConfig(metrics=names, rules={"world.colours": {"drop": 0.4}})
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


# ---- issue 24: warn rules warn, statistical resolution, progress-keeping selection, steering ----------------
def recorded(select="most_progress", warn=True, margin=1.0):
    """A guard judging a recorded history: 'fid' (stop rule), 'sat' (warn rule) and the objective."""
    rules = {"fid": {"drop": 0.5, "patience": 2, "action": "stop"}}
    if warn:
        rules["sat"] = {"drift": 0.05, "patience": 1, "action": "warn"}
    cfg = GuardConfig(every=1, metrics=["reward", "fid", "sat"], rules=rules, select=select, margin=margin,
                      recoveries=0)
    return Guard(cfg, {}, PROMPTS, SEEDS)


#: step -> (objective, reward, fid, sat): the warn rule (sat) breaks from step 2 on, the stop rule (fid) at 5 and 6
HISTORY = [(0.0, 1.0, 0.9, 0.5), (0.2, 0.9, 0.9, 0.52), (0.5, 0.8, 0.85, 0.6), (0.9, 0.7, 0.8, 0.7),
           (0.7, 0.75, 0.6, 0.7), (1.2, 0.6, 0.3, 0.8), (1.5, 0.5, 0.2, 0.9)]


def judge_history(guard, history=HISTORY):
    for step, (objective, reward, fid, sat) in enumerate(history):
        guard.judge(step, {"objective": objective, "reward": reward, "fid": fid, "sat": sat})
    return guard


@pytest.mark.parametrize("select", ["most_progress", "last_ok", "best_reward_ok", "last"])
def test_a_warn_rule_never_changes_the_published_update(select):
    warned, plain = judge_history(recorded(select)), judge_history(recorded(select, warn=False))
    assert any(c.decision == "warn" for c in warned.history)  # the warn rule fired ...
    assert warned.selected_step == plain.selected_step  # ... and the selection is the one without it
    assert [c.selected for c in warned.history] == [c.selected for c in plain.history]
    assert [c.ok for c in warned.history] == [c.ok for c in plain.history]
    assert warned.stopped == plain.stopped and warned.stopped.startswith("update 6")


def test_most_progress_publishes_the_highest_objective_within_every_stop_rule():
    guard = judge_history(recorded("most_progress"))
    # within the stop rule (fid >= 0.4 at patience 2: steps 0-4; 5 and 6 break it): the objective peaks at 3
    assert [c.ok for c in guard.history] == [True] * 5 + [False] * 2
    assert guard.selected_step == 3
    assert [c.step for c in guard.history if c.selected] == [0, 1, 2, 3]  # each a new best: snapshot then
    assert judge_history(recorded("last_ok")).selected_step == 4
    assert judge_history(recorded("best_reward_ok")).selected_step == 0


def test_most_progress_without_an_objective_publishes_the_last_ok():
    guard = recorded("most_progress")
    for step, (_, reward, fid, sat) in enumerate(HISTORY):
        guard.judge(step, {"reward": reward, "fid": fid, "sat": sat})
    assert guard.selected_step == 4


def test_a_rule_breaks_only_beyond_its_margin_of_standard_errors():
    from srpo.training.guard_stats import Estimate

    def judged(margin, se):
        guard = recorded("last_ok", warn=False, margin=margin)
        est = {"fid": Estimate(0.9, se, 100, True, se)}
        guard.judge(0, {"reward": 1.0, "fid": 0.9, "sat": 0.5}, est)
        low = {"fid": Estimate(0.35, se, 100, True, se)}  # 0.05 below the bound 0.4
        return guard.judge(1, {"reward": 1.0, "fid": 0.35, "sat": 0.5}, low).within["fid"]

    assert judged(margin=1.0, se=0.06)  # 0.05 outside, under one standard error: not broken
    assert not judged(margin=1.0, se=0.04)  # more than one standard error outside: broken
    assert not judged(margin=0.0, se=0.06)  # no margin: any value outside breaks it


def test_standard_errors_binomial_for_shares_paired_for_drifts():
    from srpo.training.guard_stats import estimate

    share = estimate([1.0, 0.0, 1.0, 1.0, float("nan")])
    assert share.share and share.n == 4 and share.value == 0.75
    assert share.se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    base = [0.1, 0.5, 0.9, 0.3]
    moved = estimate([b + 0.2 for b in base], base)  # every image moved by the same amount
    assert not moved.share and moved.se > 0.1 and moved.change_se == pytest.approx(0.0, abs=1e-12)
    guard = Guard(GuardConfig(every=1, metrics=["reward"]), fake_metrics(), PROMPTS, SEEDS)
    check = guard.check(0, fake_generator({"x": 0.3}))
    assert check.images["reward"] == len(PROMPTS) and check.errors["reward"] > 0
    assert json.loads(json.dumps(guard.summary()))["checks"][0]["errors"]["reward"] == check.errors["reward"]


def test_a_tolerance_the_set_cannot_resolve_is_refused_with_the_resolving_size():
    rule = {"world.colours": {"drop": 0.1, "patience": 2}}
    with pytest.raises(ValidationError, match=r"rules.world.colours: a tolerance of 0.1 .* 16 guard images"
                                              r".*use at least 100 images"):
        GuardConfig(metrics=["world.colours"], num_prompts=16, rules=rule)
    GuardConfig(metrics=["world.colours"], num_prompts=25, seeds_per_prompt=4, rules=rule)  # 100: resolves
    expected = {"world.colours": {"drop": 0.1, "expect": 0.9}}  # sd 0.3 at the declared base value: 36 images
    with pytest.raises(ValidationError, match="use at least 36 images"):
        GuardConfig(metrics=["world.colours"], num_prompts=7, seeds_per_prompt=5, rules=expected)
    GuardConfig(metrics=["world.colours"], num_prompts=9, seeds_per_prompt=4, rules=expected)
    with pytest.raises(ValidationError, match="use at least 64 images"):  # a declared sd, any metric
        GuardConfig(metrics=["pickscore"], num_prompts=8, rules={"pickscore": {"drop": 0.5, "sd": 2.0}})
    GuardConfig(metrics=["pickscore"], num_prompts=8, rules={"pickscore": {"drop": 0.5}})  # unknown: at run time
    with pytest.raises(ValidationError, match="expect is 0.9, but pickscore is not a \\[0, 1\\] metric"):
        GuardConfig(metrics=["pickscore"], rules={"pickscore": {"drop": 0.5, "expect": 0.9}})


def test_the_base_check_warns_about_a_rule_its_images_cannot_resolve(caplog):
    cfg = GuardConfig(every=1, metrics=["reward", "quality"], rules={"quality": {"relative_drop": 0.001}})
    guard = Guard(cfg, fake_metrics(), PROMPTS, SEEDS)
    guard.check(0, fake_generator({"x": 0.6}))  # past 0.55 the quality varies from image to image
    assert "quality" in guard.unresolved and "use at least" in guard.unresolved["quality"]
    assert "quality" in guard.summary()["unresolved"]


def test_rules_follow_the_steering():
    from srpo.world.guard_metrics import world_guard_metrics

    cfg = GuardConfig(metrics=["world.colours", "world.vivid_share", "saturation", "brightness", "contrast"],
                      num_prompts=15, seeds_per_prompt=4,
                      rules={"world.colours": {"drop": 0.08, "expect": 0.9}, "saturation": {"drift": 0.15},
                             "brightness": {"drift": 0.15},
                             "contrast": {"drift": 0.15, "unless_steered": ["Crisp"]}})
    world, _ = world_guard_metrics(cfg)
    for words, off in [((["bright"], ["dark"]), ["brightness"]), ((["dark"], ["bright"]), ["brightness"]),
                       ((["vivid"], ["muted"]), ["saturation"]), ((["muted"], []), ["saturation"]),
                       ((["crisp"], []), ["contrast"]), ((["Natural-lighting"], ["dull"]), [])]:
        guard = Guard(cfg, world, PROMPTS, SEEDS, positive_words=words[0], negative_words=words[1])
        assert guard.steered == off, words
        check = guard.judge(0, {"world.colours": 1.0, "world.vivid_share": 0.5, "saturation": 0.5,
                                "brightness": 0.5, "contrast": 0.2})
        assert set(check.within) == set(cfg.rules) - set(off) and check.steered == off


# ---- asymmetric statistics and dense checks ------------------------------------------------------------------
def share(value, n=100):
    """A share measured on ``n`` images: its binomial standard error."""
    from srpo.training.guard_stats import Estimate

    se = math.sqrt(value * (1 - value) / n)
    return Estimate(value, se, n, True, se)


def fidelity_guard(**cfg):
    """A stop rule on a fidelity share (drop 0.1 from its base), judged from recorded estimates."""
    cfg = GuardConfig(**{"every": 4, "metrics": ["fid"], "rules": {"fid": {"drop": 0.1, "patience": 2}},
                         "select": "last_ok", "recoveries": 0, "early_check": False, **cfg})
    return Guard(cfg, {}, PROMPTS, SEEDS)


def judge_fid(guard, step, value, n=400):
    return guard.judge(step, {"fid": value}, {"fid": share(value, n)})


def test_a_check_is_published_only_when_confidently_within_and_stops_only_when_confidently_broken():
    guard = fidelity_guard()
    judge_fid(guard, 0, 0.9, 100)  # bound 0.8; se 0.03-0.04 near it
    inside_by_little = judge_fid(guard, 4, 0.82, 100)  # inside, by less than one se (0.038)
    assert inside_by_little.within["fid"] and not inside_by_little.publishable["fid"] and not inside_by_little.ok
    assert inside_by_little.decision == "ok" and guard.selected_step == 0  # neither stopped nor published
    outside_by_little = judge_fid(guard, 8, 0.78, 100)  # outside, by less than one se (0.041): not broken either
    assert outside_by_little.within["fid"] and not outside_by_little.ok and not guard.should_stop
    assert judge_fid(guard, 12, 0.9, 100).ok and guard.selected_step == 12
    assert judge_fid(guard, 16, 0.7, 100).decision == "ok"  # broken once (patience 2) ...
    assert judge_fid(guard, 20, 0.7, 100).decision == "stop" and guard.selected_step == 12  # ... twice: stop
    loose = fidelity_guard(margin=0.0)  # no margin: one test for both
    judge_fid(loose, 0, 0.9, 100)
    assert judge_fid(loose, 4, 0.82, 100).ok and not judge_fid(loose, 8, 0.78, 100).within["fid"]


def test_checks_densify_when_a_stop_rule_loss_would_pass_its_tolerance_before_the_next_check():
    guard = fidelity_guard(extra_checks=10)  # every 4, drop 0.1; se about 0.016-0.02 on 400 images
    assert judge_fid(guard, 0, 0.9).next_check is None  # no previous check: no rate
    slow = judge_fid(guard, 4, 0.89)  # bound 0.26 of the tolerance, at twice its rate 0.42 by update 8: no
    assert slow.used["fid"] == pytest.approx((0.01 + share(0.89, 400).se) / 0.1) and slow.next_check is None
    fast = judge_fid(guard, 8, 0.85)  # 0.68, rising 0.1 an update: past 1 before update 12
    assert fast.ok and fast.next_check == 10  # half the regular interval
    assert [s for s in range(9, 13) if guard.due(s, total=40)] == [10, 11, 12]
    held = judge_fid(guard, 10, 0.86)
    assert held.dense and held.next_check is None  # the loss fell back: the regular grid again
    assert [s for s in range(11, 13) if guard.due(s, total=40)] == [12]
    judge_fid(guard, 12, 0.87)
    again = judge_fid(guard, 16, 0.84)
    assert again.next_check == 18
    assert judge_fid(guard, 18, 0.83).next_check == 19  # still on course to pass: the interval halves again
    past = judge_fid(guard, 19, 0.79)  # not publishable: nothing left to find before the next regular check
    assert not past.ok and past.next_check is None and guard.due(20, total=40)
    steady = fidelity_guard(extra_checks=10)
    for step, value in [(0, 0.9), (4, 0.89), (8, 0.88), (12, 0.87), (16, 0.86)]:  # a steady, slow fall
        assert judge_fid(steady, step, value).next_check is None


def test_dense_checks_stay_within_their_budget_at_every_point_and_off_when_disabled():
    def dense_steps(**cfg):
        guard = fidelity_guard(**cfg)
        value = 0.9
        for step in range(41):
            if guard.due(step, total=40):
                judge_fid(guard, step, value)
            value -= 0.004  # a steady fall that passes the tolerance within two regular intervals
        return [c.step for c in guard.history if c.dense]

    for extra in (0.1, 0.3, 0.5, 5.0):
        steps = dense_steps(extra_checks=extra)
        for i, step in enumerate(steps):  # the i+1-th dense check fits in the budget of the regular checks so far
            assert i + 1 <= math.ceil(extra * (step // 4 + 1))
    assert len(dense_steps(extra_checks=0.1)) < len(dense_steps(extra_checks=5.0))
    assert dense_steps(extra_checks=0) == [] and dense_steps(foresight=0, extra_checks=5) == []


def test_a_resumed_guard_asks_for_the_same_dense_checks():
    values = [0.9, 0.88, 0.85, 0.83, 0.84, 0.82, 0.81, 0.79, 0.7, 0.7]

    def run(guard, start, stop):
        steps = []
        for step in range(start, stop):
            if guard.due(step, total=40):
                judge_fid(guard, step, values[len(guard.history)])
                steps.append(step)
            if len(guard.history) == len(values):
                break
        return steps

    whole = fidelity_guard(extra_checks=2)
    whole_steps = run(whole, 0, 41)
    assert any(c.dense for c in whole.history)
    first = fidelity_guard(extra_checks=2)
    cut = whole_steps[3]  # interrupted right after a check that asked for a dense one
    run(first, 0, cut + 1)
    resumed = fidelity_guard(extra_checks=2)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [*whole_steps[:4], *run(resumed, cut + 1, 41)] == whole_steps
    assert [c.to_json() for c in resumed.history] == [c.to_json() for c in whole.history]


def test_the_resolution_check_scales_with_the_margin():
    rule = {"world.colours": {"drop": 0.1, "expect": 0.9}}  # sd 0.3: 2 se need 36 images, 4 se (margin 2) 144
    GuardConfig(metrics=["world.colours"], num_prompts=36, rules=rule)
    with pytest.raises(ValidationError, match=r"below 4 standard errors .*margin 2.*use at least 144 images"):
        GuardConfig(metrics=["world.colours"], num_prompts=36, rules=rule, margin=2.0)
    GuardConfig(metrics=["world.colours"], num_prompts=36, seeds_per_prompt=4, rules=rule, margin=2.0)


def test_the_last_check_off_the_grid_is_not_a_dense_one():
    guard = fidelity_guard()
    for step, value in [(0, 0.9), (4, 0.9), (8, 0.9)]:
        judge_fid(guard, step, value)
    assert guard.due(10, total=10) and not judge_fid(guard, 10, 0.9).dense


# ---- recovery: a check past the tolerance rewinds instead of training on (issue 24) ---------------------------
def test_a_check_no_longer_publishable_rewinds_to_the_selection_until_the_recoveries_are_spent():
    guard = fidelity_guard(recoveries=2, recover_lr=0.5, select="most_progress", extra_checks=0)
    objective = iter([0.0, 0.1, 0.3, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6])

    def judge(step, value):
        return guard.judge(step, {"fid": value, "objective": next(objective)}, {"fid": share(value, 400)}, total=32)

    judge(0, 0.9)
    assert judge(4, 0.88).ok and guard.selected_step == 4
    first = judge(8, 0.75)  # broken: back to update 4 at half the learning rate, no stop
    assert (first.rewind, first.lr_scale, first.decision, guard.should_stop) == (4, 0.5, "warn", False)
    assert guard.recoveries == 1 and guard.lr_scale == 0.5
    again = judge(12, 0.77)  # broken once more, but the patience counts from update 4's check (streak 0): 1
    assert again.streaks["fid"] == 1 and again.rewind == 4 and again.lr_scale == 0.25
    kept = judge(16, 0.88)  # publishable: a new selection at the lower rate
    assert kept.ok and kept.rewind is None and guard.selected_step == 16 and kept.lr_scale == 0.25
    spent = [judge(20, 0.75), judge(24, 0.74)]  # no recovery left: the stop rule stops (patience 2)
    assert [c.rewind for c in spent] == [None, None] and guard.should_stop and guard.stopped.startswith("update 24")
    assert [r["to"] for r in guard.summary()["recoveries"]] == [4, 4]
    resumed = fidelity_guard(recoveries=2, recover_lr=0.5, select="most_progress", extra_checks=0)
    resumed.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert (resumed.recoveries, resumed.lr_scale, resumed.selected_step) == (2, 0.25, 16)


def test_no_rewind_at_the_last_check_nor_before_a_trained_selection_nor_with_select_last():
    guard = fidelity_guard(recoveries=3)
    guard.judge(0, {"fid": 0.9}, {"fid": share(0.9, 400)})
    assert guard.judge(4, {"fid": 0.85}, {"fid": share(0.85, 400)}, total=4).rewind is None  # nothing left to train
    before = fidelity_guard(recoveries=3)
    before.judge(0, {"fid": 0.9}, {"fid": share(0.9, 400)})  # only the base is selected: rewinding to it
    assert before.judge(4, {"fid": 0.75}, {"fid": share(0.75, 400)}, total=40).rewind == 0  # (the base is kept)
    last = fidelity_guard(recoveries=3, select="last")  # no kept weights to rewind to
    last.judge(0, {"fid": 0.9}, {"fid": share(0.9, 400)})
    assert last.judge(4, {"fid": 0.75}, {"fid": share(0.75, 400)}, total=40).rewind is None


def test_the_early_check_comes_halfway_to_the_first_regular_one_within_the_budget():
    guard = fidelity_guard(early_check=True)  # every 4
    assert guard.judge(0, {"fid": 0.9}, {"fid": share(0.9, 400)}).next_check == 2
    assert [s for s in range(1, 5) if guard.due(s, total=40)] == [2, 3, 4]
    none = fidelity_guard(early_check=True, extra_checks=0)
    none.judge(0, {"fid": 0.9}, {"fid": share(0.9, 400)})
    assert [s for s in range(1, 5) if none.due(s, total=40)] == [4]
    off = fidelity_guard(early_check=False)
    assert off.judge(0, {"fid": 0.9}, {"fid": share(0.9, 400)}).next_check is None
