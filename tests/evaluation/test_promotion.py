"""The promotion rule (pure) and the gate against a real local ZenML store."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.evaluation.promotion import NONE, PRODUCTION, STAGING, PromotionConfig, check_promotion, comparable, decide

RULE = PromotionConfig(primary_metric="hps", margin=0.01, judges={"pick": 0.05}, bootstrap_samples=500)
CATS = ["a"] * 20 + ["b"] * 20


def _scores(shift_hps=0.0, shift_pick=0.0, seed=0):
    rng = np.random.default_rng(seed)
    base = {"hps": rng.normal(0.3, 0.02, 40), "pick": rng.normal(20, 0.5, 40)}
    noise = np.random.default_rng(seed + 1)
    return base, {"hps": base["hps"] + shift_hps + noise.normal(0, 0.005, 40),
                  "pick": base["pick"] + shift_pick + noise.normal(0, 0.01, 40)}


def test_better_primary_within_judges_is_production_and_a_worse_judge_blocks():
    ref, new = _scores(shift_hps=0.05)
    d = decide(new, ref, CATS, RULE, published_update=10)
    assert d.stage == PRODUCTION and d.comparisons[0].ci_low > 0
    ref, new = _scores(shift_hps=0.05, shift_pick=-0.2)  # judge worse than its tolerance
    d = decide(new, ref, CATS, RULE, published_update=10)
    assert d.stage == NONE and "pick" in d.reason


def test_small_gain_is_staging_and_a_loss_is_nothing():
    ref, new = _scores(shift_hps=0.004)  # better, but below the margin
    assert decide(new, ref, CATS, RULE, published_update=10).stage == STAGING
    ref, new = _scores(shift_hps=-0.03)
    assert decide(new, ref, CATS, RULE, published_update=10).stage == NONE


def test_guard_fallback_to_base_is_never_promoted():
    ref, new = _scores(shift_hps=0.05)
    d = decide(new, ref, CATS, RULE, published_update=0)
    assert d.stage == NONE and "base weights" in d.reason


def test_missing_metric_and_unequal_lengths_are_refused():
    ref, new = _scores()
    with pytest.raises(ValueError, match="'pick' was not scored"):
        decide({"hps": new["hps"]}, ref, CATS, RULE, published_update=1)
    with pytest.raises(ValueError, match="same prompts"):
        decide({"hps": new["hps"][:10], "pick": new["pick"][:10]}, ref, CATS, RULE, published_update=1)
    assert comparable({"a": 1}, {"a": 1}) is None and "['a']" in comparable({"a": 1}, {"a": 2})
    check_promotion(RULE, {"reward", "hps", "pick"})
    with pytest.raises(ValueError, match=r"^promotion metric\(s\) \['pick'\] are not scored"):
        check_promotion(RULE, {"reward", "hps"})


# ----------------------------------------------------------------------- the gate, on a ZenML store

def _evaluation(tuned, base):
    return {"prompts": [f"p{i}" for i in range(40)], "categories": CATS,
            "per_prompt": {"tuned": {k: list(map(float, v)) for k, v in tuned.items()},
                           "base": {k: list(map(float, v)) for k, v in base.items()}}}


def test_gate_promotes_archives_keeps_production_and_refuses_base_weights(module_zenml_client):
    from zenml.enums import ModelStages

    from steps.promote_model import run_promotion

    client = module_zenml_client
    client.create_model(name="srpo-gate")
    settings = {"prompts_sha256": "x", "evaluation": {"seed": 42}}
    base, first = _scores(shift_hps=0.05)

    def version(name):
        return client.create_model_version(model_name_or_id="srpo-gate", name=name)

    v1 = version("w1")  # first version: judged against the base model
    d1 = run_promotion(client, "srpo-gate", v1.id, _evaluation(first, base), RULE, settings, published_update=8)
    assert d1.stage == PRODUCTION and d1.against == "base" and "first version" in d1.reason

    better = {"hps": np.asarray(first["hps"]) + 0.03, "pick": first["pick"]}
    v2 = version("w2")
    d2 = run_promotion(client, "srpo-gate", v2.id, _evaluation(better, base), RULE, settings, published_update=8)
    assert d2.stage == PRODUCTION and d2.against.startswith("production")
    assert client.get_model_version("srpo-gate", ModelStages.PRODUCTION).name == "w2"
    assert client.get_model_version("srpo-gate", "w1").stage == ModelStages.ARCHIVED.value

    worse = {"hps": np.asarray(better["hps"]) - 0.03, "pick": better["pick"]}  # still beats the base, not production
    v3 = version("w3")
    d3 = run_promotion(client, "srpo-gate", v3.id, _evaluation(worse, base), RULE, settings, published_update=8)
    assert d3.stage == NONE and client.get_model_version("srpo-gate", ModelStages.PRODUCTION).name == "w2"

    v4 = version("w4")  # much better, but the guard kept the base weights
    best = {"hps": np.asarray(better["hps"]) + 0.1, "pick": better["pick"]}
    d4 = run_promotion(client, "srpo-gate", v4.id, _evaluation(best, base), RULE, settings, published_update=0)
    assert d4.stage == NONE and client.get_model_version("srpo-gate", ModelStages.PRODUCTION).name == "w2"

    v5 = version("w5")  # other prompts: only the base comparison is possible, so staging at most
    d5 = run_promotion(client, "srpo-gate", v5.id, _evaluation(best, base), RULE, {**settings, "prompts_sha256": "y"},
                       published_update=8)
    assert d5.stage == STAGING and "not comparable" in d5.reason

    meta = client.get_model_version("srpo-gate", "w3").run_metadata
    assert meta["promotion_stage"] == NONE and "not better" in meta["promotion_reason"]
    assert set(meta["promotion_comparisons"]) == {"hps", "pick"}

    from click.testing import CliRunner
    from zenml.cli.cli import cli

    out = CliRunner().invoke(cli, ["model", "version", "list", "--model", "srpo-gate", "-c", "name,stage,tags",
                                     "-o", "tsv"])
    assert out.exit_code == 0, out.output
    print(out.output)
    rows = {line.split("\t")[0]: line.split("\t") for line in out.output.splitlines() if line.startswith("w")}
    assert {n: r[1] for n, r in rows.items()} == {"w1": "archived", "w2": "production", "w3": "", "w4": "",
                                                   "w5": "staging"}
    assert "promotion:guard-base-weights" in rows["w4"][2] and "promotion:not-better" in rows["w3"][2]
    assert "base weights" in client.get_model_version("srpo-gate", "w4").description
