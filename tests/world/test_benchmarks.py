"""The world benchmarks' method tables are valid configs of the one trainer (no training here)."""

from benchmarks.ablation import rows
from benchmarks.cost import images_per_update
from benchmarks.hacking import LATE, methods
from srpo.config import RolloutConfig
from srpo.training.methods import check_method


def test_hacking_methods_share_everything_but_the_method_settings():
    table = methods(steps=3, seed=1)
    assert set(table) == {"direct_align", "direct_align_late", "direct_align_plain_reward", "srpo", "drtune", "grpo",
                          "mixgrpo", "nft", "awm"}
    # the same 8 images an update: 8 samples, or 2 prompts x a group of 4
    assert {(c.steps, c.seed, c.learning_rate, images_per_update(c)) for c in table.values()} == {(3, 1, 3e-5, 8)}
    assert table["direct_align_late"].sigma_range == LATE and table["direct_align"].sigma_range is None
    assert table["srpo"].inversion and not table["direct_align"].inversion
    for cfg in table.values():
        check_method(cfg, RolloutConfig(num_steps=25))  # every level and model step inside (0, 0.99]; the
        # group methods' windows and strata fit the world's 25 sampler steps


def test_ablation_rows_are_the_paper_components_and_the_baselines():
    table = rows(steps=3, seed=0)
    assert set(table) == {"srpo", "no_early_timesteps", "no_discount", "no_inversion", "no_inversion_weighted",
                          "direct_align", "refl", "draft_lv"}
    assert table["no_discount"].discount == "none" and table["srpo"].discount == "linear"
    assert table["no_inversion"].reward_form == "cfg" and not table["no_inversion"].inversion
    assert table["refl"].method == "refl" and table["draft_lv"].method == "draft_lv"
    for cfg in table.values():
        check_method(cfg, RolloutConfig())


def test_the_guard_benchmark_changes_only_the_words_and_guards_with_the_demo_block():
    """Every direction is the demo config with other words; the planted-bias run uses the demo's guard block."""
    from benchmarks.guard import DIRECTIONS, demo_parameters, direction_config, hacking_config

    params = demo_parameters()
    demo = direction_config(params, "bright", "dark")
    for positive, negative in DIRECTIONS.values():
        train = direction_config(params, positive, negative)
        assert train.model_copy(update={"positive_words": ["bright"], "negative_words": ["dark"]}) == demo
        assert train.guard == demo.guard
    hacking = hacking_config(params, steps=2, seed=0, guarded=True)
    assert hacking.guard == demo.guard and hacking_config(params, 2, 0, guarded=False).guard is None
    assert hacking.method == "direct_align" and hacking.reward_form == "sgp" and not hacking.inversion
    assert hacking.content_weight == demo.content_weight  # the demo's reward: its content term too
    assert hacking_config(params, 2, 0, guarded=False, content_weight=0.0).content_weight == 0.0


def test_the_edit_benchmark_methods_share_everything_but_the_method_settings():
    """SRPO and Direct-Align differ by the inversion only, GRPO spends the same images an update; all fit 25 steps."""
    import argparse

    from benchmarks.edit_methods import METHODS, method_configs

    args = argparse.Namespace(updates=3, learning_rate=3e-4, guidance=2.5, seed=1, batch=8, group=4, num_steps=25)
    table = method_configs(args)
    assert set(table) == set(METHODS) == {"srpo", "direct_align", "grpo"}
    assert {(c.steps, c.seed, c.learning_rate, images_per_update(c)) for c in table.values()} == {(3, 1, 3e-4, 8)}
    assert table["srpo"].inversion and not table["direct_align"].inversion
    srpo, da = (table[m].model_dump(exclude={"method", "inversion"}) for m in ("srpo", "direct_align"))
    assert srpo == da
    for cfg in table.values():
        check_method(cfg, RolloutConfig(num_steps=25))



def test_the_edit_benchmark_trains_on_the_edit_configs_reward():
    """``benchmarks.edit_methods`` at its defaults and ``configs/shapes_edit.yaml`` name the same terms and train
    alike (updates, learning rate, images per update, guidance): the config is the measured setting."""
    import yaml

    from benchmarks.edit_methods import (BATCH, GUIDANCE, KEEP_WEIGHT, LEARNING_RATE, STRUCTURE_WEIGHT, UPDATES,
                                         edit_terms)
    from srpo.rewards.config import MultiRewardConfig

    params = yaml.safe_load(open("configs/shapes_edit.yaml"))["parameters"]
    ours = MultiRewardConfig(rewards=edit_terms(KEEP_WEIGHT, STRUCTURE_WEIGHT))
    assert MultiRewardConfig(**params["rewards"]) == ours
    train = params["train"]
    assert (train["method"], train["steps"], train["learning_rate"], train["batch_size"]) == (
        "srpo", UPDATES, LEARNING_RATE, BATCH)
    assert train["guidance"] == params["rollouts"]["guidance"] == params["evaluation"]["guidance"] == GUIDANCE
    assert [t["against"] for t in edit_terms(KEEP_WEIGHT, 0.5)[3:]] == ["structure"]  # opt-in: weight > 0
    assert [t["name"] for t in edit_terms(KEEP_WEIGHT, 0.0)] == ["target", "keep", "direction"]
