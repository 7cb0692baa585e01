"""The shared runner: fixed seeds, same noise for every model, nothing left behind on failure."""

from __future__ import annotations

import pytest

from srpo.config import PolicyConfig
from srpo.evaluation.config import EvalConfig
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
    assert _summary_row(summary, "hps").split()[-1] == "+0.0000"  # python -m ops.summary: the delta column
    data = results.read_json()
    assert [r["category"] for r in data["summary"] if r["model"] == "base"] == ["overall", "x", "y"]
    assert "&lt;b&gt;" in results.index.read_text() and "dog <b>" not in results.index.read_text()


def _summary_row(summary: dict, metric: str) -> str:
    from ops.summary import evaluation_lines

    return next(line for line in evaluation_lines(summary) if line.split()[0] == metric)


def test_a_single_model_has_no_delta_and_the_summary_prints_a_dash(tmp_path):
    """configs/eval_tiny_cpu.yaml scores only ``base``: `python -m ops.summary` must not fail on it."""
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


# ------------------------------------------------ seeds from benchmark indices; prompt subsets

def _run(bench, tmp_path, name, models=("base",), metrics=None, batch_size=4, **evaluation):
    from srpo.evaluation.config import EvalReportConfig
    from srpo.evaluation.runner import run_evaluation
    from srpo.evaluation.suite import build_metrics, build_models

    metrics = metrics or {"hps": MetricConfig(name="hpsv2.1", checkpoint="builtin:tiny")}
    loaders = build_models(POLICY, models={m: {} for m in models})
    return run_evaluation(loaders, bench, build_metrics(metrics=metrics), EvalConfig(num_steps=1, **evaluation),
                          EvalReportConfig(bootstrap_samples=100, batch_size=batch_size), POLICY.height, POLICY.width, tmp_path / name)


def test_a_subset_gets_the_full_runs_seeds_and_images(tmp_path):
    """Seeds are 42 + 1000 * the prompt's benchmark index, not its position in the evaluated subset."""
    import csv

    from srpo.evaluation.benchmarks import Benchmark

    full = Benchmark(["a cat", "a dog", "a tree", "a car"], ["x", "x", "y", "y"])
    subset = full.subset([1, 3])  # what per_category=1 / categories would keep
    # one prompt per batch: a batch of other prompts may flip an 8-bit rounding (float noise, same seed)
    whole, part = _run(full, tmp_path, "full", batch_size=1), _run(subset, tmp_path, "subset", batch_size=1)
    items = part.read_json()["items"]
    assert [(it["index"], it["prompt"], it["seed"]) for it in items] == [(1, "a dog", 1042), (3, "a car", 3042)]
    rows = list(csv.DictReader((part.path / "scores.csv").open()))
    assert [(r["index"], r["seed"]) for r in rows] == [("1", "1042"), ("3", "3042")]
    for index in (1, 3):
        assert part.image_path("base", index).read_bytes() == whole.image_path("base", index).read_bytes()
    assert part.read_json()["scores"]["base"]["hps"] == [whole.read_json()["scores"]["base"]["hps"][i] for i in (1, 3)]


def test_num_prompts_refuses_a_prefix_that_drops_categories(tmp_path):
    """On HPDv2 the first N prompts are all anime, yet they would be reported as overall."""
    from srpo.evaluation.benchmarks import Benchmark

    bench = Benchmark(["a cat", "a dog", "a tree"], ["anime", "anime", "photo"])
    with pytest.raises(ValueError, match=r"cover only \['anime'\] of the categories \['anime', 'photo'\].*"
                                         r"benchmark.per_category"):
        _run(bench, tmp_path, "out", num_prompts=2)
    assert not (tmp_path / "out").exists()
    one_category = _run(Benchmark(["a cat", "a dog", "a tree"], ["all"] * 3), tmp_path, "held-out", num_prompts=2)
    assert [it["index"] for it in one_category.read_json()["items"]] == [0, 1]
    assert len(_run(bench, tmp_path, "all", num_prompts=3).read_json()["items"]) == 3  # no truncation: allowed


def test_external_results_are_read_per_model(tmp_path):
    """A DeQA ``results`` path gives each model its own file; one file for two models is refused up front."""
    import json

    from srpo.evaluation.benchmarks import Benchmark

    bench = Benchmark(["a cat", "a dog", "a tree"], ["x", "x", "y"]).subset([0, 2])
    for model, scores in (("base", [1.0, 2.0]), ("copy", [1.5, 2.25])):
        (tmp_path / f"deqa-{model}.json").write_text(json.dumps({"00000.png": scores[0], "00002.png": scores[1]}))
    per_model = {"deqa": MetricConfig(name="deqa", results=str(tmp_path / "deqa-{model}.json"))}
    data = _run(bench, tmp_path, "out", models=("base", "copy"), metrics=per_model).read_json()
    assert data["scores"] == {"base": {"deqa": [1.0, 2.0]}, "copy": {"deqa": [1.5, 2.25]}}
    assert next(r["delta"] for r in data["deltas"] if r["category"] == "overall") == pytest.approx(0.375)

    one_file = {"deqa": MetricConfig(name="deqa", results=str(tmp_path / "deqa-base.json"))}
    with pytest.raises(ValueError, match=r"one file for 2 models \(base, copy\).*\{model\}"):
        _run(bench, tmp_path, "refused", models=("base", "copy"), metrics=one_file)


def test_geneval_runs_on_a_geneval_benchmark_and_is_refused_on_others(tmp_path):
    import sys

    from srpo.evaluation.benchmarks import Benchmark, load_benchmark
    from srpo.evaluation.config import BenchmarkConfig
    from tests.evaluation.test_benchmarks import GENEVAL_LINES, write_geneval
    from tests.evaluation.test_metrics import FAKE_GENEVAL

    (tmp_path / "geneval.py").write_text(FAKE_GENEVAL)
    metric = {"geneval": MetricConfig(name="geneval", command=[sys.executable, str(tmp_path / "geneval.py"),
                                                               "{images}", "{output}"])}
    path = write_geneval(tmp_path / "evaluation_metadata.jsonl",
                         GENEVAL_LINES[:2] + [{**GENEVAL_LINES[1], "prompt": "a photo of two dogs"}])
    bench = load_benchmark(BenchmarkConfig(source=str(path), categories=["counting"]))
    data = _run(bench, tmp_path, "out", metrics=metric).read_json()
    assert [it["index"] for it in data["items"]] == [1, 2]
    assert data["scores"]["base"]["geneval"] == [1.0, 0.0]  # the record's include clause (clock) is checked
    with pytest.raises(ValueError, match="carry no GenEval include specs"):
        _run(Benchmark(["a photo of a clock"], ["counting"]), tmp_path, "refused", metrics=metric)
