"""The annotation page as a rater uses it: headless Chromium, clicks and keys, reload, export, import.

Runs Debian's Chromium (``/usr/bin/chromium``) through Playwright's Python driver; no browser is
downloaded. Skipped when Chromium is missing, unless ``SRPO_REQUIRE_BROWSER=1`` (CI sets it),
in which case a missing browser fails the test.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from srpo.evaluation.config import HackingStudyConfig, HumanEvalConfig, HumanEvalImportConfig, QualityStudyConfig
from srpo.evaluation.human_eval import export_human_eval, import_human_eval
from tests.evaluation.helpers import EVIL, make_results, write_json

CHROMIUM = os.environ.get("SRPO_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
KEYS = {"Excellent": "1", "Good": "2", "Pass": "3", "Failed": "4"}
WANT = {"tuned": "Excellent", "base": "Pass"}  # what this rater gives every dimension of each model's images
DIMS = ("alignment", "realism", "detail", "aesthetics")


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        if os.environ.get("SRPO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (.ci/run does)")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def open_page(browser, path):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(path.as_uri())
    return context, page, errors


def cards(page):
    return page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.image)")


def download(page, button, target):
    with page.expect_download() as info:
        page.click(button)
    info.value.save_as(target)
    return target


def test_rater_rates_with_clicks_and_keys_exports_and_the_import_reads_it(browser, tmp_path, zenml_client):
    results = make_results(tmp_path / "results", per_category=1)  # 4 prompts, the hostile one among them
    quality = QualityStudyConfig(prompts_per_category=1, raters_per_prompt=1, num_raters=1)
    pages, key = export_human_eval(results, HumanEvalConfig(quality=quality, image_max_side=64), tmp_path / "pages")
    model_of = {i: v["model"] for i, v in key["studies"]["quality"]["images"].items()}
    context, page, errors = open_page(browser, pages.path / "pages" / "quality_rater-01.html")
    assert page.text_content("#progress-text") == "0 / 4 done"

    # prompt 1 with the mouse
    for image in cards(page):
        for dim in DIMS:
            page.click(f'.card[data-image="{image}"] button[data-dim="{dim}"][data-level="{WANT[model_of[image]]}"]')
    assert page.text_content("#progress-text") == "1 / 4 done"
    derived = page.eval_on_selector_all(".overall", "els => els.map(e => e.textContent)")
    assert sorted(derived) == ["Overall (derived): Excellent", "Overall (derived): Pass"]

    # prompt 2 with the keyboard: n, then 1-4 on each highlighted cell (the highlight moves on by itself)
    page.keyboard.press("n")
    assert page.text_content("#position") == "prompt 2 of 4"
    for image in cards(page):
        for _ in DIMS:
            page.keyboard.press(KEYS[WANT[model_of[image]]])
    assert page.text_content("#progress-text") == "2 / 4 done"
    assert page.text_content("#position") == "prompt 3 of 4"  # finishing a prompt moves to the next

    # the browser keeps the ratings: reload and find them again
    page.fill("#annotator", "Rater <One>")
    page.reload()
    assert page.text_content("#progress-text") == "2 / 4 done" and page.text_content("#status") == "restored from this browser"
    assert page.input_value("#annotator") == "Rater <One>"
    page.keyboard.press("p")
    page.keyboard.press("p")
    assert page.locator(".level.on").count() == 8  # prompt 1's ratings are shown
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")

    # prompts 3 and 4 with the keys; ArrowDown skips a cell and ArrowUp comes back to it
    for _ in range(2):
        ids = cards(page)
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowUp")
        for image in ids:
            for _ in DIMS:
                page.keyboard.press(KEYS[WANT[model_of[image]]])
    assert page.text_content("#progress-text") == "4 / 4 done"

    # every prompt was on screen at some point; none of their markup ran or rendered
    texts = []
    for _ in range(4):
        page.keyboard.press("p")
    for _ in range(4):
        texts.append(page.text_content("#prompt"))
        assert page.eval_on_selector("#prompt", "e => e.children.length") == 0
        page.keyboard.press("n")
    assert EVIL in texts
    assert page.evaluate("window.__pwned === undefined") and page.locator("img[src='x']").count() == 0
    page.keyboard.press("?")
    assert page.is_visible("#help")

    json_file = download(page, "#export-json", tmp_path / "returned" / "quality_rater-01.json")
    csv_file = download(page, "#export-csv", tmp_path / "returned-csv" / "quality_rater-01.csv")
    assert not errors, errors
    context.close()
    exported = json.loads(json_file.read_text())
    assert exported["annotator"] == "Rater <One>" and exported["tasks_done"] == 4 and len(exported["records"]) == 8

    # the import step (in its pipeline) reads the file back with the key and un-blinds it
    from pipelines.human_eval import srpo_human_eval

    (tmp_path / "secret").mkdir()
    key_file = write_json(tmp_path / "secret" / "key.json", key)
    run = srpo_human_eval(annotations=HumanEvalImportConfig(annotations=[str(json_file)], key=key_file,
                                                            bootstrap_samples=200))
    run = zenml_client.get_pipeline_run(run.id)
    report = run.steps["import_human_eval"].outputs["human_eval_report"][0]
    data = report.load().read_json()
    share = {(r["model"], r["dimension"]): r["excellent_share"] for r in data["excellent_share"] if r["category"] == "all"}
    assert share[("tuned", "overall")] == 1.0 and share[("base", "overall")] == 0.0
    assert all(share[("tuned", d)] == 1.0 and share[("base", d)] == 0.0 for d in DIMS)
    assert data["files"][0]["annotator"] == "Rater <One>"
    assert {v.type for v in report.visualizations} == {"html", "csv"}
    assert run.steps["import_human_eval"].run_metadata["excellent_share"]["tuned"]["overall"] == 1.0
    # the result pages show hostile text as text too (prompts in the evaluation grid, the annotator's name here)
    for html_file, text in ((results.index, EVIL), (report.load().index, "Rater <One>")):
        context, view, errors = open_page(browser, html_file)
        assert text in view.inner_text("body") and view.evaluate("window.__pwned === undefined")
        assert view.locator("img[src='x']").count() == 0 and view.locator("b:text('bold')").count() == 0
        assert not errors, errors
        context.close()
    # the CSV export says the same
    again = import_human_eval(HumanEvalImportConfig(annotations=[str(csv_file.parent)]), key, tmp_path / "rep")
    assert again.read_json()["excellent_share"] == data["excellent_share"]


def test_hacking_page_picks_the_worst_with_keys(browser, tmp_path):
    results = make_results(tmp_path / "results", models=("early", "all", "late"), per_category=1)
    cfg = HumanEvalConfig(quality=None, hacking=HackingStudyConfig(models=["early", "all", "late"], num_prompts=4,
                                                                   raters_per_prompt=1, num_raters=1))
    pages, key = export_human_eval(results, cfg, tmp_path / "pages")
    model_of = {i: v["model"] for i, v in key["studies"]["hacking"]["images"].items()}
    context, page, errors = open_page(browser, pages.path / "pages" / "hacking_rater-01.html")
    for _ in range(3):
        ids = cards(page)
        assert len(ids) == 3
        page.keyboard.press(str(1 + [model_of[i] for i in ids].index("late")))
    ids = cards(page)
    page.click(f'.card[data-image="{ids[[model_of[i] for i in ids].index("late")]}"] button.choice')
    assert page.text_content("#progress-text") == "4 / 4 done"
    out = download(page, "#export-json", tmp_path / "returned" / "hacking.json")
    assert not errors, errors
    context.close()
    report = import_human_eval(HumanEvalImportConfig(annotations=[str(out)], bootstrap_samples=100), key,
                               tmp_path / "rep").read_json()
    assert {r["model"]: r["hacking_rate"] for r in report["hacking"]} == {"early": 0.0, "all": 0.0, "late": 1.0}
