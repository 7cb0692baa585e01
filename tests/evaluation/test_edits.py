"""The edit evaluation: held-out pairs edited by every model from the same noise, scored per reward term and
graded from pixels; held-out pairs that repeat training pairs are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from srpo.config import PolicyConfig
from srpo.evaluation.config import EditEvalConfig, EvalConfig, EvalReportConfig
from srpo.evaluation.edits import (check_edit_benchmark, check_edit_evaluation, evaluate_edit_suite,
                                   load_heldout_edits, run_edit_evaluation)
from srpo.rewards import RewardConfig
from srpo.rewards.config import MultiRewardConfig
from srpo.world.edits import draw_edits, grade_edits, write_edit_folder

TINY_CLIP = {"name": "hf_clip", "checkpoint": "builtin:tiny"}
REWARDS = MultiRewardConfig.model_validate({"rewards": [
    {"name": "target", "reward": TINY_CLIP, "form": "plain"},
    {"name": "keep", "reward": TINY_CLIP, "against": "source", "form": "plain", "weight": 0.5},
    {"name": "direction", "reward": TINY_CLIP, "against": "direction", "form": "plain", "weight": 0.25}]})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits")
    return write_edit_folder(draw_edits(4, 0), root / "train"), write_edit_folder(draw_edits(3, 7), root / "heldout")


def test_both_models_edit_the_same_heldout_pairs_and_every_term_is_scored(folders, tmp_path):
    """Base and a second copy of it: same seeds, so the same edits and scores; the terms add up to ``rewards``."""
    train, heldout = folders
    policy = PolicyConfig(pretrained="builtin:tiny-flux-kontext", height=64, width=64)
    evaluation = EvalConfig(num_steps=2, edits=EditEvalConfig(source=str(heldout), grader="shapes"))
    summary, results, report = evaluate_edit_suite(
        tmp_path / "results", policy=policy, evaluation=evaluation, report=EvalReportConfig(batch_size=2),
        models={"base": {}, "again": {}}, reward=RewardConfig(**TINY_CLIP), rewards=REWARDS,
        train_edits=str(train))
    data = results.read_json()
    assert [it["prompt"] for it in data["items"]] == draw_edits(3, 7).instructions
    scores = data["scores"]
    assert set(scores["base"]) == {"reward", "rewards.target", "rewards.keep", "rewards.direction", "rewards", "done",
                                   "kept"}
    assert scores["base"] == scores["again"]  # the weights alone decide: same pairs, same noise
    total = [a + 0.5 * b + 0.25 * c for a, b, c in zip(*(scores["base"][f"rewards.{t}"]
                                                         for t in ("target", "keep", "direction")))]
    assert scores["base"]["rewards"] == pytest.approx(total, abs=1e-5)
    for i in range(3):
        assert results.image_path("base", i).is_file() and (results.path / "sources" / f"{i:05d}.png").is_file()
    base = report["models"]["base"]
    assert base["n"] == 3 and base["done"] == pytest.approx(sum(scores["base"]["done"]) / 3)
    assert base["kept"] == pytest.approx(sum(scores["base"]["kept"]) / 3)
    assert set(base["kept_by_attribute"]) <= {"fg", "bg", "brightness", "saturation", "shape"}
    assert report["change_from_baseline"]["again"] == {"done": 0.0, "kept": 0.0}
    assert json.loads((results.path / "edit_report.json").read_text()) == report
    assert summary["means"]["base"]["rewards"] == pytest.approx(sum(total) / 3, abs=1e-5)


class _PixelEditor:
    """A stand-in edit model in pixel space (identity VAE): its edit is ``answer(sources)``."""

    device = torch.device("cpu")

    def __init__(self, answer):
        self.answer = answer

    def latent_shape(self, height, width):
        return 3, height, width

    def encode_sources(self, pixels):
        return pixels

    def encode_images(self, pixels):
        return pixels

    def encode_prompts(self, instructions, sources):
        return instructions, sources

    def rollout(self, cond, eps, *args):
        return self.answer(*cond)

    def decode(self, x):
        return x


def test_grader_reads_a_copied_source_as_undone_and_the_drawn_target_as_done(tmp_path):
    """The bounds: copying the source keeps everything and does nothing; the drawn targets do the edits."""
    triples = draw_edits(16, 3)
    heldout = write_edit_folder(triples, tmp_path / "heldout")
    edits = load_heldout_edits(EditEvalConfig(source=str(heldout)), 64, 64)

    def drawn_target(texts, src):  # each source's own drawn target (found by its pixels)
        nearest = torch.cdist(src.flatten(1), triples.sources.flatten(1)).argmin(1)  # [B]
        return triples.targets[nearest]

    models = {"base": lambda: _PixelEditor(lambda texts, src: src.clone()),
              "oracle": lambda: _PixelEditor(drawn_target)}
    _, report = run_edit_evaluation(models, edits, {}, EvalConfig(num_steps=1), EvalReportConfig(batch_size=5), 64, 64,
                                    tmp_path / "out", grader="shapes")
    copy, oracle = report["models"]["base"], report["models"]["oracle"]
    assert copy["done"] == 0.0 and copy["kept"] == 1.0
    done, kept = grade_edits(triples.targets, triples.sources, triples.instructions)
    assert oracle["done"] == pytest.approx(done.float().mean().item()) and oracle["done"] > 0.5
    assert report["change_from_baseline"]["oracle"]["done"] == pytest.approx(oracle["done"])


def test_qwen_image_edit_edits_the_heldout_pairs_too(folders, tmp_path):
    """The other edit family: its text encoder reads each source with the instruction; scored per term."""
    _, heldout = folders
    policy = PolicyConfig(pretrained="builtin:tiny-qwen-image-edit", height=64, width=64)
    summary, results, report = evaluate_edit_suite(
        tmp_path / "results", policy=policy, rewards=REWARDS, report=EvalReportConfig(batch_size=3),
        evaluation=EvalConfig(num_steps=1, guidance=1.0, num_prompts=2, edits=EditEvalConfig(source=str(heldout))))
    assert report == {} and len(summary["prompts"]) == 2
    assert set(results.read_json()["metrics"]) == {"rewards.target", "rewards.keep", "rewards.direction", "rewards"}


def test_heldout_pairs_that_are_training_pairs_are_refused(folders, tmp_path):
    train, _ = folders
    copy = shutil.copytree(train, tmp_path / "copy")
    with pytest.raises(ValueError, match=r"evaluation.edits.source .*4 held-out pair\(s\).* training pairs"):
        load_heldout_edits(EditEvalConfig(source=str(copy)), 64, 64, train_source=str(train))
    with pytest.raises(ValueError, match="is the folder training edits"):
        load_heldout_edits(EditEvalConfig(source=str(train)), 64, 64, train_source=str(train))


def test_edit_plans_are_checked_before_anything_runs(folders, tmp_path):
    train, heldout = folders
    edits = EvalConfig(edits=EditEvalConfig(source=str(heldout)))
    with pytest.raises(ValueError, match="^evaluation.edits is not set, but this run trains on edits"):
        check_edit_evaluation(EvalConfig(), str(train))
    with pytest.raises(ValueError, match="^evaluation.edits .* is set, but this run trains a text-to-image"):
        check_edit_evaluation(edits, None)
    with pytest.raises(ValueError, match="^evaluation.edits.source .* is rollouts.edits"):
        check_edit_evaluation(EvalConfig(edits=EditEvalConfig(source=str(train) + "/")), str(train))
    check_edit_evaluation(edits, str(train))
    with pytest.raises(ValueError, match="exactly one of benchmark"):
        check_edit_benchmark(True, edits, {"clip": {}}, None)
    with pytest.raises(ValueError, match="nothing scores the edits"):
        check_edit_benchmark(False, edits, None, None)
    check_edit_benchmark(False, edits, None, REWARDS)


def test_direction_terms_need_source_captions(tmp_path):
    folder = write_edit_folder(draw_edits(2, 1), tmp_path / "heldout")
    lines = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps({k: v for k, v in x.items() if k != "source_text"})
                                                     for x in lines))
    policy = PolicyConfig(pretrained="builtin:tiny-flux-kontext", height=64, width=64)
    with pytest.raises(ValueError, match=r"need each pair's source caption"):
        evaluate_edit_suite(tmp_path / "out", policy=policy, rewards=REWARDS,
                            evaluation=EvalConfig(num_steps=1, edits=EditEvalConfig(source=str(folder))))
    assert not (tmp_path / "out").exists()


def test_promotion_fingerprint_names_the_heldout_edits_and_is_unchanged_without_them():
    """A text-to-image run's stored fingerprint (from before ``evaluation.edits``) stays comparable."""
    from srpo.evaluation.promotion import PromotionConfig
    from steps.promote_model import evaluation_settings

    def settings(evaluation):
        return evaluation_settings({"prompts": ["a"], "categories": ["all"]}, evaluation, PolicyConfig(), None,
                                   PromotionConfig(primary_metric="reward"))

    assert "edits" not in settings(EvalConfig())["evaluation"]
    assert settings(EvalConfig(edits=EditEvalConfig(source="held-out")))["evaluation"]["edits"]["source"] == "held-out"
