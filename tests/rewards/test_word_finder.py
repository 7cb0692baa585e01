"""The control-word finder on the shapes world: the word of the look ranks first; report, tool and errors."""

from __future__ import annotations

import csv
import hashlib

import pytest
import torch
import torch.nn.functional as F

from srpo.evaluation.word_report import WordFinderConfig, run_word_finder, world_images
from srpo.rewards.config import RewardConfig
from srpo.rewards.word_finder import find_control_words
from srpo.world.grader import rgb_to_hsv
from srpo.world.shapes import WORLD_WORDS, all_base_prompts

DISTRACTORS = ["photo", "detailed", "painting", "shiny", "pale", "light", "colourful", "Real", "Anime"]
CANDIDATES = list(WORLD_WORDS) + DISTRACTORS
PROMPTS = all_base_prompts()[::7]


class AttributeReward(torch.nn.Module):
    """A transparent CLIP-like world reward: image features read brightness and saturation off the pixels,
    every word has a text direction (``bright``/``dark`` along brightness, ``vivid``/``muted`` along
    saturation, any other word a fixed pseudo-random direction of the same length)."""

    dims = 12

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        _, s, v = rgb_to_hsv(images)  # [N, H, W] each
        rest = images.mean((2, 3))  # [N, 3]: colour, a nuisance the words must not exploit
        feats = torch.cat([(v.mean((1, 2)) - 0.5)[:, None], (s.mean((1, 2)) - 0.5)[:, None],
                           torch.ones(len(images), 1), rest, torch.zeros(len(images), self.dims - 6)], 1)
        return F.normalize(feats, dim=-1)  # [N, D]

    def word_vector(self, word: str) -> torch.Tensor:
        axis = {"bright": (0, 1.0), "dark": (0, -1.0), "vivid": (1, 1.0), "muted": (1, -1.0)}
        vec = torch.zeros(self.dims)
        if word in axis:
            i, sign = axis[word]
            vec[i] = sign
            return vec
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return F.normalize(torch.randn(self.dims, generator=torch.Generator().manual_seed(seed)), dim=0)

    def text_features(self, prompts) -> torch.Tensor:
        rows = []
        for p in prompts:
            vec = torch.zeros(self.dims)
            vec[2] = 2.0
            for word in p.replace(".", " ").split():
                vec = vec + 0.5 * self.word_vector(word)
            rows.append(vec)
        return F.normalize(torch.stack(rows), dim=-1)


@pytest.fixture(scope="module")
def world_reward():
    """The shapes world's CLIP reward, trained briefly (the world tests' tiny recipe) and loaded as hf_clip."""
    from srpo.models.tokenizers import clip_tokenizer
    from srpo.rewards.hf_clip_reward import HFClipReward
    from srpo.world.reward import RewardTrainConfig, train_reward

    model, _ = train_reward(RewardTrainConfig(width=32, layers=1, projection_dim=16, steps=40, batch_size=16,
                                              pool_size=128, learning_rate=3e-3))
    return HFClipReward(model, clip_tokenizer(77))


@pytest.mark.parametrize("wanted,unwanted", [("bright", "dark"), ("vivid", "muted"), ("muted", "vivid")])
def test_the_attribute_word_ranks_first_among_all_world_words_and_distractors(wanted, unwanted):
    scores = find_control_words(AttributeReward(), world_images(wanted, 32, 0), world_images(unwanted, 32, 1),
                                PROMPTS, CANDIDATES, num_samples=200)
    assert [s.word for s in scores][0] == wanted
    assert scores[0].low > max(s.high for s in scores[2:])  # clear of everything but, at most, one runner-up
    assert scores[-1].word == unwanted  # the opposite word is the best negative control word
    assert sorted(s.word for s in scores) == sorted(set(CANDIDATES))
    assert all(s.low <= s.separation <= s.high for s in scores)


def test_trained_world_reward_ranks_bright_first(world_reward):
    scores = find_control_words(world_reward, world_images("bright", 32, 0), world_images("dark", 32, 1),
                                PROMPTS, CANDIDATES, num_samples=200)
    assert scores[0].word == "bright"
    assert scores[0].low > scores[1].separation


def test_report_folder_tool_and_refusals(tmp_path):
    from srpo.evaluation.images import save_png

    for name, word in (("a", "bright"), ("b", "dark")):
        for i, image in enumerate(world_images(word, 6, 3)):
            save_png(image, tmp_path / name / f"{i:03d}.png")
    cfg = WordFinderConfig(reward=RewardConfig(name="hf_clip", checkpoint="builtin:tiny"), images_a=str(tmp_path / "a"),
                           images_b=str(tmp_path / "b"), prompts=PROMPTS[:3], candidates=["bright", "dark", "photo"],
                           num_samples=20)
    report, scores = run_word_finder(cfg, tmp_path / "report", reward=AttributeReward())
    rows = list(csv.DictReader((report.path / "control_words.csv").open()))
    assert [r["word"] for r in rows] == [s.word for s in scores] and rows[0]["word"] == "bright"
    html = report.index.read_text()
    assert "<svg" in html and "bright" in html and report.read_json()["num_a"] == 6
    with pytest.raises(ValueError, match="unknown world image set"):
        world_images("shiny", 4, 0)
    with pytest.raises(ValueError, match="candidates is empty"):
        find_control_words(AttributeReward(), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), ["p"], [" "])

    class ImageOnly:
        is_image_only = True

    with pytest.raises(ValueError, match="reads no text"):
        find_control_words(ImageOnly(), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), ["p"], ["w"])


def test_command_line_tool_writes_the_report(tmp_path, capsys, private_cache):
    from ops.find_control_words import main

    words = tmp_path / "words.txt"
    words.write_text("bright\ndark\n")
    assert main(["--reward", "hf_clip", "--checkpoint", "builtin:tiny", "--images-a", "world:vivid", "--images-b",
                 "world:muted", "--candidates", str(words), "--prompts", "a red circle on a blue background",
                 "--max-images", "4", "--num-samples", "10", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "control_words.csv").is_file()
    assert "report:" in capsys.readouterr().out


def test_pipeline_step_stores_the_report_with_its_dashboard_table(zenml_client, private_cache):
    from zenml import pipeline

    from steps import find_control_words as finder_step

    @pipeline(enable_cache=False)
    def _finder(config: WordFinderConfig) -> None:
        finder_step(config=config)

    cfg = WordFinderConfig(reward=RewardConfig(name="hf_clip", checkpoint="builtin:tiny"), images_a="world:bright",
                           images_b="world:dark", prompts=PROMPTS[:2], candidates=["bright", "dark", "photo"],
                           max_images=4, num_samples=10)
    run = zenml_client.get_pipeline_run(_finder(cfg).id)
    assert run.status == "completed"
    step_run = run.steps["find_control_words"]
    artifact = step_run.outputs["control_words"][0]
    report = artifact.load()
    assert [r["word"] for r in report.read_json()["words"]] == step_run.run_metadata["best_words"]
    kinds = {v.type for v in artifact.visualizations}
    assert {"html", "csv"} <= {str(k.value) if hasattr(k, "value") else str(k) for k in kinds}
