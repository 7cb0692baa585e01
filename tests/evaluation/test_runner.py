"""The shared runner: fixed seeds, same noise for every model, nothing left behind on failure."""

from __future__ import annotations

import pytest

from srpo.config import EvalConfig, PolicyConfig
from srpo.evaluation.config import MetricConfig
from srpo.evaluation.suite import evaluate_suite

POLICY = PolicyConfig(device="cpu")


def test_same_weights_give_the_same_images_and_a_zero_delta(tmp_path):
    summary, results = evaluate_suite(
        ["a cat", "a dog <b>", "a tree"], tmp_path / "out", policy=POLICY, evaluation=EvalConfig(num_steps=2),
        models={"base": {}, "copy": {}}, metrics={"hps": MetricConfig(name="hpsv2.1", checkpoint="builtin:tiny")},
        categories=["x", "x", "y"])
    assert (results.image_path("base", 1).read_bytes() == results.image_path("copy", 1).read_bytes())
    assert results.image_path("base", 0).read_bytes() != results.image_path("base", 2).read_bytes()
    assert summary["deltas"] == {"delta_hps": 0.0}
    assert _summary_row(summary, "hps").split()[-1] == "+0.0000"  # python -m pipelines.summary: the delta column
    data = results.read_json()
    assert [r["category"] for r in data["summary"] if r["model"] == "base"] == ["overall", "x", "y"]
    assert "&lt;b&gt;" in results.index.read_text() and "dog <b>" not in results.index.read_text()


def _summary_row(summary: dict, metric: str) -> str:
    from pipelines.summary import evaluation_lines

    return next(line for line in evaluation_lines(summary) if line.split()[0] == metric)


def test_a_single_model_has_no_delta_and_the_summary_prints_a_dash(tmp_path):
    """configs/eval_tiny_cpu.yaml scores only ``base``: `python -m pipelines.summary` must not fail on it."""
    summary, _ = evaluate_suite(
        ["a cat", "a dog"], tmp_path / "out", policy=POLICY, evaluation=EvalConfig(num_steps=1),
        models={"base": {}}, metrics={"hps": MetricConfig(name="hpsv2.1", checkpoint="builtin:tiny")})
    assert summary["deltas"] == {}
    cells = _summary_row(summary, "hps").split()
    assert cells[-1] == "-" and float(cells[1]) == pytest.approx(summary["means"]["base"]["hps"], abs=1e-4)


def test_a_failing_metric_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="exited with status 1"):
        evaluate_suite(["a cat"], tmp_path / "out", policy=POLICY, evaluation=EvalConfig(num_steps=1),
                       metrics={"deqa": MetricConfig(name="deqa", command=["false"])})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="'tuned' already has an entry|already has an entry 'tuned'"):
        evaluate_suite(["a cat"], tmp_path / "out", policy=POLICY, evaluation=EvalConfig(num_steps=1),
                       tuned="/x", models={"tuned": {}}, metrics={"h": MetricConfig(name="hpsv2.1",
                                                                                    checkpoint="builtin:tiny")})
