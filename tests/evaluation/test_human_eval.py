"""Human-evaluation export (sample, blinding, pages, key) and import (checks, un-blinding, statistics)."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from srpo.evaluation.config import (HackingStudyConfig, HumanEvalConfig, HumanEvalImportConfig, QualityStudyConfig,
                                    StyleStudyConfig)
from srpo.evaluation.human_eval import AnnotationError, export_human_eval, import_human_eval
from tests.evaluation.helpers import EVIL, make_results, rate_all, write_json


def export(tmp_path, results=None, **cfg):
    results = results or make_results(tmp_path / "results")
    cfg.setdefault("blinding_seed", 1)
    return export_human_eval(results, HumanEvalConfig(**cfg), tmp_path / "pages")


def page_data(path):
    text = path.read_text()
    return json.loads(re.search(r'<script id="srpo-data" type="application/json">(.*?)</script>', text, re.S).group(1))


def test_stratified_sample_assignment_and_blinding(tmp_path):
    quality = QualityStudyConfig(prompts_per_category=2, raters_per_prompt=2, num_raters=3)
    pages, key = export(tmp_path, quality=quality, output_dir=str(tmp_path / "to-raters"))
    study = key["studies"]["quality"]
    cats = [t["category"] for t in study["tasks"].values()]
    assert sorted(cats) == sorted(["anime", "concept-art", "paintings", "photo"] * 2)  # 2 per category
    assert len(study["images"]) == 2 * len(study["tasks"])  # one image per model and prompt
    loads = [len(p["tasks"]) for p in key["pages"].values()]
    assert sum(loads) == 2 * 8 and max(loads) - min(loads) <= 1  # 2 raters per prompt, balanced
    for t in study["tasks"]:
        assert sum(t in p["tasks"] for p in key["pages"].values()) == 2
    for f in (pages.path / "pages").iterdir():
        text = f.read_text()
        assert "tuned" not in text and '"base"' not in text  # model names never reach a page
        assert "src=" not in text.split('<script id="srpo-data"')[0]  # nothing loaded from elsewhere
        data = page_data(f)
        assert all(len(t["images"]) == 2 and t["images"][0]["src"].startswith("data:image/jpeg;base64,")
                   for t in data["tasks"])
    assert not any("key" in p.name for p in pages.path.rglob("*"))
    shared = sorted(p.relative_to(tmp_path / "to-raters").as_posix() for p in (tmp_path / "to-raters").rglob("*.*"))
    assert shared == ["manifest.json", "pages/quality_rater-01.html", "pages/quality_rater-02.html",
                      "pages/quality_rater-03.html"]
    assert json.dumps(key).count("tuned") >= len(study["tasks"])  # the key holds the models


def test_image_order_is_shuffled_per_prompt_and_ids_are_random(tmp_path):
    quality = QualityStudyConfig(prompts_per_category=3, raters_per_prompt=1, num_raters=1)
    results = make_results(tmp_path / "results")
    pages, key = export_human_eval(results, HumanEvalConfig(quality=quality, blinding_seed=5), tmp_path / "a")
    images = key["studies"]["quality"]["images"]
    firsts = {images[t["images"][0]["id"]]["model"] for t in page_data(next((pages.path / "pages").iterdir()))["tasks"]}
    assert firsts == {"base", "tuned"}  # neither model is always shown first
    _, key_again = export_human_eval(results, HumanEvalConfig(quality=quality), tmp_path / "b")
    assert set(key_again["studies"]["quality"]["images"]).isdisjoint(images)  # fresh ids without a blinding seed
    assert sorted(t["item"] for t in key_again["studies"]["quality"]["tasks"].values()) == \
        sorted(t["item"] for t in key["studies"]["quality"]["tasks"].values())  # same sample (seed)


def test_page_keeps_prompt_text_inert(tmp_path):
    pages, key = export(tmp_path, quality=QualityStudyConfig(prompts_per_category=3, raters_per_prompt=1,
                                                              num_raters=1))
    text = next((pages.path / "pages").iterdir()).read_text()
    assert "<script>window.__pwned" not in text and "<img src=x" not in text and "<b>bold" not in text
    prompts = [t["prompt"] for t in page_data(next((pages.path / "pages").iterdir()))["tasks"]]
    assert EVIL in prompts  # the text itself survives, as data


def test_studies_need_their_models_and_prompts(tmp_path):
    results = make_results(tmp_path / "results")
    with pytest.raises(ValueError, match=r"models \['srpo'\] were not evaluated"):
        export(tmp_path, results, quality=QualityStudyConfig(models=["base", "srpo"]))
    with pytest.raises(ValueError, match="needs style-variant prompts"):
        export(tmp_path, results, quality=None, style=StyleStudyConfig(models=["base", "tuned"]))
    with pytest.raises(ValueError, match="three different models"):
        HackingStudyConfig(models=["a", "a", "b"])
    with pytest.raises(ValueError, match=r"raters_per_prompt \(5\) cannot exceed num_raters \(3\)"):
        QualityStudyConfig(num_raters=3)
    assert not (tmp_path / "pages").exists()  # nothing half-written


LEVEL = {"base": "Good", "tuned": "Excellent"}


@pytest.fixture
def exported(tmp_path):
    pages, key = export(tmp_path, quality=QualityStudyConfig(prompts_per_category=2, raters_per_prompt=2,
                                                             num_raters=2))
    write_json(tmp_path / "key.json", key)
    return pages, key


def quality_files(tmp_path, key, level=lambda model, dim: LEVEL[model]):
    return [write_json(tmp_path / f"{p}.json", rate_all(p, key, "quality", level, annotator=f"person {i}"))
            for i, p in enumerate(key["pages"])]


def test_import_unblinds_and_reports_the_share_of_excellent(tmp_path, exported):
    _, key = exported
    files = quality_files(tmp_path, key, lambda m, d: "Excellent" if m == "tuned" or d == "alignment" else "Pass")
    report = import_human_eval(HumanEvalImportConfig(annotations=files, bootstrap_samples=200), key, tmp_path / "rep")
    data = report.read_json()
    share = {(r["model"], r["dimension"]): r for r in data["excellent_share"] if r["category"] == "all"}
    assert share[("tuned", "overall")]["excellent_share"] == 1.0 and share[("base", "overall")]["excellent_share"] == 0
    assert share[("base", "alignment")]["excellent_share"] == 1.0 and share[("base", "realism")]["excellent_share"] == 0
    assert share[("tuned", "realism")]["ratings"] == 2 * 8  # 8 prompts x 2 raters
    levels = {(r["model"], r["dimension"]): r for r in data["levels"]}
    assert levels[("base", "overall")]["Pass"] == 16  # one Excellent of four -> Pass
    alpha = {r["dimension"]: r["alpha"] for r in data["agreement"]}
    assert alpha["realism"] == 1.0  # both raters agree everywhere
    assert {p.name for p in report.path.iterdir()} >= {"index.html", "excellent_share.csv", "agreement.csv",
                                                       "levels.csv", "report.json"}


def test_bootstrap_interval_over_prompts(tmp_path, exported):
    _, key = exported
    # base is Excellent on anime prompts only: 2 of 8 prompts
    cats = {t: v["category"] for t, v in key["studies"]["quality"]["tasks"].items()}
    files = []
    for i, p in enumerate(key["pages"]):
        data = rate_all(p, key, "quality", lambda m, d: "Good", annotator=f"r{i}")
        for r in data["records"]:
            if cats[r["task"]] == "anime":
                r.update({d: "Excellent" for d in ("alignment", "realism", "detail", "aesthetics")})
        files.append(write_json(tmp_path / f"{p}.json", data))
    data = import_human_eval(HumanEvalImportConfig(annotations=files, bootstrap_samples=500), key,
                             tmp_path / "rep").read_json()
    row = next(r for r in data["excellent_share"] if r["model"] == "base" and r["dimension"] == "overall"
               and r["category"] == "all")
    assert row["excellent_share"] == 0.25 and 0.0 <= row["ci_low"] < 0.25 < row["ci_high"] <= 0.75


@pytest.mark.parametrize("edit, message", [
    (lambda d, k: d["records"][0].update(image="img-0000000000"), "unknown image id 'img-0000000000'"),
    (lambda d, k: d["records"][0].update(task="task-nope"), "unknown task id 'task-nope'"),
    (lambda d, k: d["records"][0].pop("detail"), r"missing dimension\(s\) \['detail'\]"),
    (lambda d, k: d["records"][0].update(realism="Superb"), "unknown rating"),
    (lambda d, k: d["records"][0].update(overall="Failed"), "disagrees with the rubric's rule"),
    (lambda d, k: d.update(export_id="export-other"), "comes from export 'export-other'"),
    (lambda d, k: d.update(page_id="page-nope"), "unknown page id"),
    (lambda d, k: d["records"].append(dict(d["records"][0])), "duplicate rater"),
    (lambda d, k: d["records"].pop(), "not finished"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, exported, edit, message):
    _, key = exported
    page = next(iter(key["pages"]))
    data = rate_all(page, key, "quality", lambda m, d: "Good")
    edit(data, key)
    with pytest.raises(AnnotationError, match=message):
        import_human_eval(HumanEvalImportConfig(annotations=[write_json(tmp_path / "a.json", data)]), key,
                          tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_duplicate_raters_across_files(tmp_path, exported):
    _, key = exported
    p1, p2 = list(key["pages"])
    same_page = [write_json(tmp_path / f"{n}.json", rate_all(p1, key, "quality", lambda m, d: "Good")) for n in "ab"]
    with pytest.raises(AnnotationError, match="duplicate rater: .* both exports of page"):
        import_human_eval(HumanEvalImportConfig(annotations=same_page), key, tmp_path / "rep")
    # one person filling in both rater slots rates every prompt twice (each prompt is on both pages)
    one_person = [write_json(tmp_path / f"{p}.json", rate_all(p, key, "quality", lambda m, d: "Good", annotator="Ann"))
                  for p in (p1, p2)]
    with pytest.raises(AnnotationError, match="duplicate rater: 'Ann' rated image"):
        import_human_eval(HumanEvalImportConfig(annotations=one_person), key, tmp_path / "rep")


def test_incomplete_pages_are_allowed_when_asked(tmp_path, exported):
    _, key = exported
    page = next(iter(key["pages"]))
    data = rate_all(page, key, "quality", lambda m, d: "Good")
    data["records"] = data["records"][:2]
    cfg = HumanEvalImportConfig(annotations=[write_json(tmp_path / "a.json", data)], allow_incomplete=True)
    report = import_human_eval(cfg, key, tmp_path / "rep").read_json()
    assert report["files"][0]["prompts_done"] == 1


def test_csv_exports_are_read_too(tmp_path, exported):
    _, key = exported
    page = next(iter(key["pages"]))
    data = rate_all(page, key, "quality", lambda m, d: LEVEL[m])
    buf = io.StringIO()
    cols = ["export_id", "page_id", "study", "rater", "annotator", "task", "image", "alignment", "realism", "detail",
            "aesthetics", "overall"]
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    for r in data["records"]:
        w.writerow({**{k: data[k] for k in cols[:5]}, **r})
    (tmp_path / "returned").mkdir()
    (tmp_path / "returned" / "a.csv").write_text(buf.getvalue())
    report = import_human_eval(HumanEvalImportConfig(annotations=[str(tmp_path / "returned")]), key, tmp_path / "rep")
    share = {(r["model"], r["dimension"]): r["excellent_share"] for r in report.read_json()["excellent_share"]
             if r["category"] == "all"}
    assert share == {**{("tuned", d): 1.0 for d in ("alignment", "realism", "detail", "aesthetics", "overall")},
                     **{("base", d): 0.0 for d in ("alignment", "realism", "detail", "aesthetics", "overall")}}


def test_hacking_and_style_studies(tmp_path):
    results = make_results(tmp_path / "results", models=("early", "all", "late"), style_words=("Comic",))
    _, key = export(tmp_path, results, quality=None,
                    hacking=HackingStudyConfig(models=["early", "all", "late"], num_prompts=6, raters_per_prompt=2,
                                               num_raters=2),
                    style=StyleStudyConfig(models=["early", "late"], num_prompts=3, raters_per_prompt=1, num_raters=1))
    hacking_tasks = key["studies"]["hacking"]["tasks"]
    assert len(hacking_tasks) == 6 and all(not t["category"].startswith("style/") for t in hacking_tasks.values())
    assert {t["category"] for t in key["studies"]["style"]["tasks"].values()} == {"style/Comic"}
    files = []
    for p, info in key["pages"].items():
        first = sorted(hacking_tasks)[0]
        if info["study"] == "hacking":  # late is the worst on every prompt but one
            def pick(task, first=first):
                return "all" if task == first else "late"
        else:
            def pick(task):
                return "late"
        files.append(write_json(tmp_path / f"{p}.json", rate_all(p, key, info["study"], pick, annotator=p)))
    data = import_human_eval(HumanEvalImportConfig(annotations=files, bootstrap_samples=200), key,
                             tmp_path / "rep").read_json()
    rate = {r["model"]: r["hacking_rate"] for r in data["hacking"] if r["category"] == "all"}
    assert rate == pytest.approx({"early": 0.0, "all": 2 / 12, "late": 10 / 12})
    wins = {r["model"]: r["win_rate"] for r in data["style"] if r["category"] == "all"}
    assert wins == {"early": 0.0, "late": 1.0}
    alpha = {r["study"]: r["alpha"] for r in data["agreement"]}
    assert alpha["hacking"] == 1.0
