"""The world benchmarks' method tables are valid configs of the one trainer (no training here)."""

from benchmarks.ablation import rows
from benchmarks.hacking import LATE, methods
from srpo.config import training_levels


def test_hacking_methods_share_everything_but_the_method_settings():
    table = methods(steps=3, seed=1)
    assert set(table) == {"direct_align", "direct_align_late", "direct_align_plain_reward", "srpo"}
    assert {(c.steps, c.seed, c.learning_rate, c.batch_size) for c in table.values()} == {(3, 1, 3e-5, 8)}
    assert table["direct_align_late"].sigma_range == LATE and table["direct_align"].sigma_range is None
    assert table["srpo"].inversion and not table["direct_align"].inversion
    for cfg in table.values():
        training_levels(cfg)  # every level stays inside (0, 0.99]


def test_ablation_rows_are_the_paper_components_and_the_baselines():
    table = rows(steps=3, seed=0)
    assert set(table) == {"srpo", "no_early_timesteps", "no_discount", "no_inversion", "no_inversion_weighted",
                          "direct_align", "refl", "draft_lv"}
    assert table["no_discount"].discount == "none" and table["srpo"].discount == "linear"
    assert table["no_inversion"].reward_form == "cfg" and not table["no_inversion"].inversion
    assert table["refl"].method == "refl" and table["draft_lv"].method == "draft_lv"
    for cfg in table.values():
        training_levels(cfg)


def test_the_guard_benchmark_guards_with_sets_that_can_see_their_tolerances():
    """A share moves in steps of one image: the guard set must resolve the tolerance it enforces."""
    from benchmarks.guard import settings

    table = settings(steps_steering=3, steps_hacking=2)
    steering = table["steering"]["guard"]
    prompts, seeds = steering.prompts_and_seeds([f"prompt {i}" for i in range(20)])
    assert len(prompts) == 45 and len(set(zip(prompts, seeds))) == 45 and len(set(seeds)) == 45
    assert 1 / len(prompts) < steering.rules["world.colours"].drop / 2  # one image is under half the tolerance
    assert table["steering"]["train"].positive_words == ["vivid"] and table["steering"]["train"].inversion
    hacking = table["hacking"]
    assert set(hacking["guard"].rules) == {"saturation"}  # an image statistic only: no grader in the rule
    assert hacking["train"].method == "direct_align" and hacking["train"].reward_form == "sgp"
