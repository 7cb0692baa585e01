"""``srpo_evaluation`` end to end on the local ZenML stack, then ``srpo_human_eval`` on its export."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from srpo.evaluation.config import MetricConfig
from srpo.evaluation.images import load_image
from srpo.evaluation.metrics import load_metric
from tests.evaluation.helpers import rate_all, write_json

CONFIG = Path("configs/eval_tiny_cpu.yaml")
FAKE_DEQA = """
import json, sys, pathlib
images, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
meta = [json.loads(l) for l in (images / "metadata.jsonl").read_text().splitlines()]
json.dump({m["file_name"]: 2.0 + m["index"] for m in meta}, out.open("w"))
"""


def test_evaluation_pipeline_then_human_eval_import(zenml_client, tmp_path):
    from pipelines.evaluation import srpo_evaluation
    from pipelines.human_eval import srpo_human_eval
    from srpo.models.tiny import save_tiny_flux

    other = save_tiny_flux(tmp_path / "flux-seed1", seed=1)  # a second and third transformer to compare
    third = save_tiny_flux(tmp_path / "flux-seed2", seed=2)
    (tmp_path / "deqa.py").write_text(FAKE_DEQA)
    raw = yaml.safe_load(CONFIG.read_text())
    p = raw["parameters"]
    raw["enable_cache"] = False
    p["benchmark"].update(per_category=1, style_variants={"words": ["Comic"], "num_prompts": 1})
    p["models"] = {"base": {}, "seed1": {"transformer": str(other / "transformer")},
                   "seed2": {"transformer": str(third / "transformer")}}
    p["metrics"] = {k: v for k, v in p["metrics"].items() if k in ("hps", "sgp_hps", "imagereward")}
    p["metrics"]["deqa"] = {"name": "deqa", "command": [sys.executable, str(tmp_path / "deqa.py"), "{images}",
                                                        "{output}"]}
    p["evaluation"]["num_steps"] = 2
    p["report"]["bootstrap_samples"] = 200
    p["human_eval"] = {"blinding_seed": 0, "image_max_side": 32,
                       "quality": {"prompts_per_category": 1, "raters_per_prompt": 2, "num_raters": 2},
                       "hacking": {"models": ["base", "seed1", "seed2"], "num_prompts": 3, "raters_per_prompt": 1,
                                   "num_raters": 1},
                       "style": {"models": ["base", "seed1"], "num_prompts": 1, "raters_per_prompt": 1,
                                 "num_raters": 1}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = zenml_client.get_pipeline_run(srpo_evaluation.with_options(config_path=str(config))().id)
    assert run.status == "completed"
    assert set(run.steps) == {"load_benchmark", "analyze_prompts", "evaluate", "export_human_eval"}

    prompts = run.steps["load_benchmark"].outputs["benchmark_prompts"][0].load()
    categories = run.steps["load_benchmark"].outputs["benchmark_categories"][0].load()
    assert categories == ["anime", "concept-art", "paintings", "photo", "style/Comic"]
    assert prompts[4] == f"{prompts[3]}, Comic style"
    indices = [0, 3, 6, 9, 12]  # per_category=1 of 3 prompts per category keeps the benchmark's indices
    assert run.steps["load_benchmark"].outputs["benchmark_indices"][0].load() == indices

    artifact = run.steps["evaluate"].outputs["evaluation_results"][0]
    assert {v.type for v in artifact.visualizations} == {"html", "csv"}
    results = artifact.load()
    data = results.read_json()
    assert [(it["index"], it["seed"]) for it in data["items"]] == [(i, 42 + 1000 * i) for i in indices]
    assert data["models"] == ["base", "seed1", "seed2"] and set(data["metrics"]) == {"hps", "sgp_hps", "imagereward", "deqa"}
    rows = {(r["model"], r["metric"], r["category"]): r for r in data["summary"]}
    assert rows[("seed1", "hps", "overall")]["n"] == 4  # style variants are not part of overall
    assert rows[("seed1", "hps", "style/Comic")]["n"] == 1
    overall = rows[("base", "hps", "overall")]
    assert overall["ci_low"] <= overall["mean"] <= overall["ci_high"]
    assert {(r["model"], r["metric"]) for r in data["deltas"] if r["category"] == "overall"} == \
        {(m, k) for m in ("seed1", "seed2") for k in data["metrics"]}
    assert data["scores"]["seed2"]["deqa"] == [2.0 + i for i in indices]
    assert data["scores"]["base"]["hps"] != data["scores"]["seed1"]["hps"]  # different weights, different images
    for name in ("summary.csv", "deltas.csv", "scores.csv", "index.html"):
        assert (results.path / name).is_file()
    # the scores are those of the saved 8-bit files
    hps = load_metric(MetricConfig(name="hpsv2.1", checkpoint="builtin:tiny"))
    saved = [load_image(results.image_path("seed1", i)) for i in indices]
    import torch

    torch.testing.assert_close(hps.score_batched(torch.stack(saved), prompts).tolist(), data["scores"]["seed1"]["hps"],
                               rtol=1e-4, atol=1e-5)
    summary = run.steps["evaluate"].outputs["evaluation"][0].load()
    assert set(summary["means"]) == {"base", "seed1", "seed2"} and "delta_hps" in summary["deltas"]

    words = run.steps["analyze_prompts"].outputs["prompt_word_frequency"][0]
    assert {v.type for v in words.visualizations} == {"html", "csv"}
    assert words.load().read_json()["num_prompts"] == 4  # the benchmark's own prompts: no style variant

    pages = run.steps["export_human_eval"].outputs["human_eval_pages"][0].load()
    manifest = pages.read_json()
    assert sorted((p["study"], p["rater"]) for p in manifest["pages"]) == [
        ("hacking", "rater-01"), ("quality", "rater-01"), ("quality", "rater-02"), ("style", "rater-01")]
    key = run.steps["export_human_eval"].outputs["human_eval_key"][0].load()
    assert key["export_id"] == manifest["export_id"]

    # raters send their files back; the import pipeline finds the key artifact by itself
    files = []
    for page_id, info in key["pages"].items():
        if info["study"] == "quality":
            data = rate_all(page_id, key, "quality", lambda m, d: "Excellent" if m == "seed1" else "Good",
                            annotator=info["rater"])
        else:
            data = rate_all(page_id, key, info["study"], lambda task: "seed1")
        files.append(write_json(tmp_path / f"{page_id}.json", data))
    imported = zenml_client.get_pipeline_run(srpo_human_eval(annotations={"annotations": files}).id)
    report = imported.steps["import_human_eval"].outputs["human_eval_report"][0].load().read_json()
    share = {(r["model"], r["dimension"]): r["excellent_share"] for r in report["excellent_share"]
             if r["category"] == "all"}
    assert share[("seed1", "overall")] == 1.0 and share[("base", "overall")] == 0.0
    assert {r["model"]: r["hacking_rate"] for r in report["hacking"]}["seed1"] == 1.0
    assert {r["model"]: r["win_rate"] for r in report["style"] if r["category"] == "all"} == {"base": 0.0, "seed1": 1.0}


def test_geneval_benchmark_carries_its_specs_to_the_metric(zenml_client, tmp_path):
    """A ``geneval`` benchmark's records reach GenEval's folder layout through the pipeline's artifacts."""
    from pipelines.evaluation import srpo_evaluation
    from tests.evaluation.test_benchmarks import GENEVAL_LINES, write_geneval
    from tests.evaluation.test_metrics import FAKE_GENEVAL

    (tmp_path / "geneval.py").write_text(FAKE_GENEVAL)
    lines = GENEVAL_LINES[:3] + [{**GENEVAL_LINES[1], "prompt": "a photo of two dogs"}]
    raw = yaml.safe_load(CONFIG.read_text())
    p = raw["parameters"]
    raw["enable_cache"] = False
    p["benchmark"] = {"source": str(write_geneval(tmp_path / "evaluation_metadata.jsonl", lines)),
                      "categories": ["counting", "position"]}
    p["metrics"] = {"geneval": {"name": "geneval", "command": [sys.executable, str(tmp_path / "geneval.py"),
                                                               "{images}", "{output}"]}}
    p["evaluation"]["num_steps"] = 1
    p["human_eval"] = {"enabled": False}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = zenml_client.get_pipeline_run(srpo_evaluation.with_options(config_path=str(config))().id)
    assert run.status == "completed"
    assert run.steps["load_benchmark"].outputs["benchmark_records"][0].load() == lines[1:]
    data = run.steps["evaluate"].outputs["evaluation_results"][0].load().read_json()
    assert [(it["index"], it["seed"]) for it in data["items"]] == [(1, 1042), (2, 2042), (3, 3042)]
    assert data["scores"]["base"]["geneval"] == [1.0, 1.0, 0.0]  # no clock in "a photo of two dogs"
