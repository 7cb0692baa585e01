"""Bootstrap intervals, Krippendorff's alpha and the rubric's overall rule."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.evaluation.agreement import krippendorff_alpha
from srpo.evaluation.bootstrap import bootstrap_ci
from srpo.evaluation.human_eval.rubric import overall_rating


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 50), rng.normal(1.0, 1.0, 2000)
    est, lo, hi = bootstrap_ci(small, samples=2000, seed=1)
    assert lo < est < hi and est == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_ci(large, samples=2000, seed=1)
    assert (hi2 - lo2) < (hi - lo) / 4  # ~ 1/sqrt(n)
    assert (hi2 - lo2) == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.15)  # normal theory width
    assert bootstrap_ci(small, samples=500, seed=3) == bootstrap_ci(small, samples=500, seed=3)


def test_stratified_bootstrap_keeps_category_weights():
    values = np.array([0.0] * 90 + [10.0] * 10)
    groups = ["a"] * 90 + ["b"] * 10
    est, lo, hi = bootstrap_ci(values, groups=groups, samples=300, seed=0)
    assert est == 5.0 and lo == hi == 5.0  # constant within groups: macro mean never moves


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units, missing values
    rows = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[v for v in col if v is not None] for col in zip(*rows)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3]], "ordinal") == 1.0
    assert np.isnan(krippendorff_alpha([[1, 1], [1, 1]]))


@pytest.mark.parametrize("ratings, overall", [
    (("Excellent",) * 4, "Excellent"),
    (("Excellent", "Excellent", "Good", "Pass"), "Good"),
    (("Excellent", "Excellent", "Failed", "Good"), "Good"),  # rules apply in order
    (("Excellent", "Good", "Pass", "Pass"), "Pass"),
    (("Good", "Good", "Good", "Failed"), "Failed"),
])
def test_overall_rule(ratings, overall):
    assert overall_rating(dict(zip(("alignment", "realism", "detail", "aesthetics"), ratings))) == overall


def test_overall_rule_needs_all_dimensions():
    with pytest.raises(ValueError, match=r"missing dimension\(s\) \['aesthetics'\]"):
        overall_rating({"alignment": "Good", "realism": "Good", "detail": "Good"})


def test_a_non_finite_score_is_refused_with_the_items_it_came_from(tmp_path):
    from srpo.evaluation.config import EvalReportConfig
    from srpo.evaluation.results import write_results

    items = [{"index": i, "prompt": f"p{i}", "category": "photo", "seed": 42 + 1000 * i} for i in range(4)]
    scores = {"base": {"deqa": [3.1, float("nan"), 2.0, 4.0]}, "tuned": {"deqa": [3.0, 3.2, 2.5, 4.1]}}
    with pytest.raises(ValueError, match=r"'deqa' gave 1 non-finite score\(s\) for model 'base' \(benchmark items \[1\]\)"):
        write_results(tmp_path, items, scores, EvalReportConfig(bootstrap_samples=100), {})
    assert not (tmp_path / "results.json").exists()


def test_an_extra_reward_cannot_take_the_training_reward_name():
    from srpo.evaluation.suite import build_metrics
    from srpo.rewards import RewardConfig

    tiny = RewardConfig(name="clip", checkpoint="builtin:tiny")
    with pytest.raises(ValueError, match="extra_rewards has an entry 'reward'"):
        build_metrics(reward=tiny, extra_rewards={"reward": tiny})
