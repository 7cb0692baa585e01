"""srpo_training on an edit model end to end (tiny FLUX.1 Kontext): trained on edit pairs, evaluated on held-out
pairs with the edit reward's terms and the shapes grader, the human-eval pages showing each source."""

from pathlib import Path

import yaml

from srpo.world.edits import draw_edits, write_edit_folder
from tests.evaluation.test_human_eval import page_data

TINY = Path("configs/tiny_cpu.yaml")
TINY_CLIP = {"name": "hf_clip", "checkpoint": "builtin:tiny"}


def test_an_edit_run_is_evaluated_on_its_heldout_edits(zenml_client, tmp_path):
    from pipelines.training import srpo_training

    train = write_edit_folder(draw_edits(4, 0), tmp_path / "train")
    heldout = write_edit_folder(draw_edits(3, 9), tmp_path / "heldout")
    raw = yaml.safe_load(TINY.read_text())
    raw["enable_cache"] = False
    params = raw["parameters"]
    params["policy"]["pretrained"] = "builtin:tiny-flux-kontext"
    params["reward"] = TINY_CLIP
    params["rewards"] = {"rewards": [{"name": "target", "reward": TINY_CLIP, "form": "plain"},
                                     {"name": "keep", "reward": TINY_CLIP, "against": "source", "form": "plain",
                                      "weight": 0.5}]}
    params["rollouts"].update(edits=str(train), num_steps=2)
    params["train"].update(steps=1)
    params["evaluation"] = {"num_steps": 2, "edits": {"source": str(heldout), "grader": "shapes"}}
    params["human_eval"] = {"quality": {"prompts_per_category": 3, "raters_per_prompt": 1, "num_raters": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    run = zenml_client.get_pipeline_run(srpo_training.with_options(config_path=str(tmp_path / "run.yaml"))().id)

    assert run.status == "completed" and "evaluate_edits" in run.steps and "evaluate" not in run.steps
    step = run.steps["evaluate_edits"]
    results = step.outputs["evaluation_results"][0].load().read_json()
    assert [it["prompt"] for it in results["items"]] == draw_edits(3, 9).instructions  # the held-out pairs
    assert results["models"] == ["base", "tuned"]
    assert set(results["metrics"]) == {"reward", "rewards.target", "rewards.keep", "rewards", "done", "kept"}
    report = step.outputs["edit_report"][0].load()
    assert set(report["models"]) == {"base", "tuned"} and report["models"]["base"]["n"] == 3
    assert report["change_from_baseline"]["tuned"]["done"] == (report["models"]["tuned"]["done"]
                                                              - report["models"]["base"]["done"])
    assert step.run_metadata["done_tuned"] == report["models"]["tuned"]["done"]
    pages = run.steps["export_human_eval"].outputs["human_eval_pages"][0].load()
    tasks = page_data(next((pages.path / "pages").iterdir()))["tasks"]
    assert len(tasks) == 3 and all(t["source"].startswith("data:image/jpeg;base64,") for t in tasks)
