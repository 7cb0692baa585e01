"""Human-evaluation export (sample, blinding, pages, key) and import (checks, un-blinding, statistics)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Annotated

import pytest
from zenml import log_metadata, pipeline, step

from srpo.evaluation.artifacts import EvalResults
from srpo.evaluation.config import (HackingStudyConfig, HumanEvalConfig, HumanEvalImportConfig, QualityStudyConfig,
                                    StyleStudyConfig)
from srpo.evaluation.human_eval import AnnotationError, export_human_eval, import_human_eval
from srpo.evaluation.human_eval.importer import KeyCandidate, export_id_of, find_key, read_annotations
from tests.evaluation.helpers import EVIL, make_results, rate_all, write_json


def export(tmp_path, results=None, store_key=None, **cfg):
    results = results or make_results(tmp_path / "results")
    cfg.setdefault("blinding_seed", 1)
    if cfg.get("output_dir") and store_key is None:
        store_key = ignore_key
    return export_human_eval(results, HumanEvalConfig(**cfg), tmp_path / "pages", store_key)


def ignore_key(key):
    """A ``store_key`` for tests that do not look at where the key is kept."""


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
    export_id = key["export_id"]
    assert shared == [f"{export_id}/manifest.json", f"{export_id}/pages/quality_rater-01.html",
                      f"{export_id}/pages/quality_rater-02.html", f"{export_id}/pages/quality_rater-03.html"]
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


def published(folder):
    """Every file under ``folder``, relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_each_export_is_published_into_its_own_folder_after_its_key_is_stored(tmp_path):
    results = make_results(tmp_path / "results")
    out = tmp_path / "to-raters"
    stored = []

    def store_key(key):  # nothing of this export may be published yet
        assert not (out / key["export_id"]).exists()
        stored.append(key)

    def run(name, num_raters, store_key=store_key, seed=None):
        quality = QualityStudyConfig(prompts_per_category=2, raters_per_prompt=1, num_raters=num_raters)
        cfg = HumanEvalConfig(quality=quality, output_dir=str(out), blinding_seed=seed)
        return export_human_eval(results, cfg, tmp_path / name, store_key)

    _, first = run("a", 4)
    _, second = run("b", 2)  # fewer raters: rater-03/04 of the first export must not sit beside these pages
    assert [k["export_id"] for k in stored] == [first["export_id"], second["export_id"]]
    assert {p.name for p in out.iterdir()} == {first["export_id"], second["export_id"]}
    assert published(out / second["export_id"]) == ["manifest.json", "pages/quality_rater-01.html",
                                                    "pages/quality_rater-02.html"]
    assert len(published(out / first["export_id"])) == 1 + 4  # the earlier export is left as it was
    manifest = json.loads((out / second["export_id"] / "manifest.json").read_text())
    assert manifest["export_id"] == second["export_id"]

    def refuse(key):
        raise OSError("key store unreachable")

    with pytest.raises(OSError, match="key store unreachable"):
        run("c", 2, refuse)
    assert len(list(out.iterdir())) == 2  # a key that could not be stored publishes nothing
    with pytest.raises(ValueError, match="no store_key was given: the key must be stored before pages"):
        run("d", 2, None)


def test_an_interrupted_copy_has_no_manifest_and_a_new_copy_replaces_it(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    results = make_results(tmp_path / "results")
    out = tmp_path / "to-raters"
    cfg = HumanEvalConfig(quality=QualityStudyConfig(prompts_per_category=2, raters_per_prompt=1, num_raters=3),
                          output_dir=str(out), blinding_seed=7)
    put_file, copied = LocalFileSystem.put_file, []

    def put_then_fail(self, lpath, rpath, **kw):
        if len(copied) == 2:
            raise OSError("connection lost")
        copied.append(rpath.rsplit("/", 1)[-1])
        return put_file(self, lpath, rpath, **kw)

    monkeypatch.setattr(LocalFileSystem, "put_file", put_then_fail)
    with pytest.raises(OSError, match="connection lost"):
        export_human_eval(results, cfg, tmp_path / "a", ignore_key)
    (export_id,) = [p.name for p in out.iterdir()]
    assert published(out / export_id) == ["pages/quality_rater-01.html", "pages/quality_rater-02.html"]  # no manifest
    (out / export_id / "pages" / "stale.html").write_text("left over")
    monkeypatch.setattr(LocalFileSystem, "put_file", put_file)
    _, key = export_human_eval(results, cfg, tmp_path / "b", ignore_key)  # same blinding seed: same export
    assert key["export_id"] == export_id
    assert published(out / export_id) == ["manifest.json", "pages/quality_rater-01.html",
                                          "pages/quality_rater-02.html", "pages/quality_rater-03.html"]


def test_the_manifest_is_copied_last(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    put_file, order = LocalFileSystem.put_file, []

    def record(self, lpath, rpath, **kw):
        order.append(rpath.rsplit("/", 1)[-1])
        return put_file(self, lpath, rpath, **kw)

    monkeypatch.setattr(LocalFileSystem, "put_file", record)
    export(tmp_path, quality=QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1, num_raters=2),
           output_dir=str(tmp_path / "to-raters"))
    assert order == ["quality_rater-01.html", "quality_rater-02.html", "manifest.json"]


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


# ------------------------------------------------------------------ which key un-blinds the files

def candidate(key, recorded=True, loads=None):
    """A stored key as the import step lists it; ``loads`` records which keys were loaded."""
    def load():
        if loads is not None:
            loads.append(key["export_id"])
        return key
    return KeyCandidate(f"key {key['export_id']}", key["export_id"] if recorded else None, load)


def test_the_key_is_found_by_the_files_export_id(tmp_path, exported):
    _, study = exported
    _, later = export(tmp_path / "later", quality=QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1,
                                                                     num_raters=1), blinding_seed=2)
    _, older = export(tmp_path / "older", quality=QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1,
                                                                     num_raters=1), blinding_seed=3)
    export_id = export_id_of(read_annotations(quality_files(tmp_path, study)))
    assert export_id == study["export_id"]
    loads = []
    newest_first = [candidate(later, loads=loads), candidate(study, recorded=False, loads=loads),
                    candidate(older, loads=loads)]
    assert find_key(export_id, newest_first) is study
    assert loads == [study["export_id"]]  # a key whose recorded export id differs is not loaded
    assert find_key(export_id, [candidate(later, recorded=False), candidate(study)]) is study
    with pytest.raises(AnnotationError, match=rf"none of the 2 human_eval_key artifact versions .* export "
                                              rf"'{study['export_id']}'.*artifact version id.*JSON file"):
        find_key(export_id, [candidate(later), candidate(older, recorded=False)])
    with pytest.raises(AnnotationError, match=rf"no human_eval_key artifact exists.*'{study['export_id']}'"):
        find_key(export_id, [])


def test_files_of_several_exports_are_refused(tmp_path, exported):
    _, study = exported
    _, other = export(tmp_path / "other", quality=QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1,
                                                                     num_raters=1), blinding_seed=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    files = quality_files(tmp_path / "mine", study) + quality_files(tmp_path / "theirs", other)
    with pytest.raises(AnnotationError, match="come from 2 different exports.*import each export's files separately"):
        export_id_of(read_annotations(files))


def test_a_wrong_key_says_how_to_name_the_right_one(tmp_path, exported):
    _, study = exported
    _, other = export(tmp_path / "other", quality=QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1,
                                                                     num_raters=1), blinding_seed=2)
    with pytest.raises(AnnotationError, match=rf"key is for export '{other['export_id']}'.*leave `key` unset.*"
                                              "artifact version id"):
        import_human_eval(HumanEvalImportConfig(annotations=quality_files(tmp_path, study)), other, tmp_path / "rep")


# ---------------------------------------------------------------------- the ZenML steps

@step
def _legacy_export(key: dict) -> Annotated[dict, "human_eval_key"]:
    """What export_human_eval did before: the key as a returned output, its export id only as step metadata."""
    log_metadata(metadata={"export_id": key["export_id"]})
    return key


@pipeline(enable_cache=False)
def _legacy_export_pipeline(key: dict) -> None:
    _legacy_export(key)


def test_import_step_uses_the_key_of_the_files_export_not_the_latest(zenml_client, tmp_path, exported):
    from pipelines.human_eval import srpo_human_eval
    from steps.export_human_eval import save_key_artifact
    from steps.import_human_eval import configured_key, stored_keys
    from steps.import_human_eval import import_human_eval as import_step

    _, study = exported
    _legacy_export_pipeline(study)  # the real study, exported before keys carried metadata
    small = QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1, num_raters=1)
    _, demo = export(tmp_path / "demo", quality=small, blinding_seed=2)
    save_key_artifact(demo)  # a later tiny run's key: the newest human_eval_key
    versions = zenml_client.list_artifact_versions(artifact="human_eval_key", sort_by="desc:created").items
    assert [k.export_id for k in stored_keys(zenml_client)] == [demo["export_id"], study["export_id"]]

    files = quality_files(tmp_path, study)
    run = zenml_client.get_pipeline_run(srpo_human_eval(annotations={"annotations": files}).id)
    assert run.status == "completed"
    report = run.steps["import_human_eval"].outputs["human_eval_report"][0].load().read_json()
    assert report["export_id"] == study["export_id"]

    assert configured_key(str(versions[1].id)) == study  # key: an artifact version id
    assert configured_key(str(tmp_path / "key.json")) == study  # key: a JSON file
    with pytest.raises(AnnotationError, match="no artifact version has this id"):
        configured_key("00000000-0000-0000-0000-000000000000")
    _, unknown = export(tmp_path / "unknown", quality=small, blinding_seed=3)
    (tmp_path / "returned").mkdir()
    with pytest.raises(AnnotationError, match=rf"none of the 2 human_eval_key .* '{unknown['export_id']}'.*"
                                              "zenml artifact version list"):
        import_step.entrypoint(HumanEvalImportConfig(annotations=quality_files(tmp_path / "returned", unknown)))


@step
def _results(folder: str) -> EvalResults:
    return make_results(Path(folder))


@pipeline(enable_cache=False)
def _export_pipeline(folder: str, config: HumanEvalConfig) -> None:
    from steps import export_human_eval as export_step

    export_step(results=_results(folder), config=config)


def test_export_step_stores_the_key_before_publishing_pages(zenml_client, tmp_path):
    quality = QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1, num_raters=2)
    out = tmp_path / "to-raters"
    config = HumanEvalConfig(quality=quality, image_max_side=16, output_dir=str(out))
    run = zenml_client.get_pipeline_run(_export_pipeline(str(tmp_path / "results"), config).id)
    assert run.status == "completed"
    step_run = run.steps["export_human_eval"]
    key_version = step_run.outputs["human_eval_key"][0]
    key = key_version.load()
    assert key_version.run_metadata["export_id"] == key["export_id"] == step_run.run_metadata["export_id"]
    assert step_run.outputs["human_eval_pages"][0].load().read_json()["export_id"] == key["export_id"]
    assert step_run.run_metadata["published_to"] == f"{out}/{key['export_id']}"
    assert published(out) == [f"{key['export_id']}/{f}" for f in ("manifest.json", "pages/quality_rater-01.html",
                                                                  "pages/quality_rater-02.html")]

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the pages should go")  # publishing fails
    with pytest.raises(RuntimeError):
        _export_pipeline(str(tmp_path / "results-2"), config.model_copy(update={"output_dir": str(blocked)}))
    failed = zenml_client.list_pipeline_runs(sort_by="desc:created").items[0]
    assert failed.status == "failed"
    kept = failed.steps["export_human_eval"].outputs["human_eval_key"][0]  # the key outlives the failure
    assert kept.load()["export_id"] == kept.run_metadata["export_id"] != key["export_id"]


def test_an_edit_evaluation_shows_each_source_before_its_edits(tmp_path):
    """Items with a ``source`` image (the edit evaluation's) carry it on the page; others carry none."""
    import torch

    from srpo.evaluation.config import EvalReportConfig
    from srpo.evaluation.images import save_png
    from srpo.evaluation.results import write_results

    plain = make_results(tmp_path / "plain")
    data = plain.read_json()
    items = [{**it, "source": f"sources/{it['index']:05d}.png"} for it in data["items"]]
    for it in items:
        save_png(torch.full((3, 16, 16), it["index"] / len(items)), plain.path / it["source"])
    edits = write_results(plain.path, items, data["scores"], EvalReportConfig(bootstrap_samples=100), {})
    quality = QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1, num_raters=1)
    for results, has_source in ((make_results(tmp_path / "t2i"), False), (edits, True)):
        pages, _ = export_human_eval(results, HumanEvalConfig(quality=quality), tmp_path / f"pages-{has_source}")
        tasks = page_data(next((pages.path / "pages").iterdir()))["tasks"]
        assert all(("source" in t) == has_source for t in tasks)
        if has_source:
            assert all(t["source"].startswith("data:image/jpeg;base64,") and len(t["images"]) == 2 for t in tasks)
            assert len({t["source"] for t in tasks}) == len(tasks)  # each task its own source
