"""The grader as a score-only reward: bright images of the right colours score highest."""

import torch

from srpo.rewards import RewardConfig, load_reward
from srpo.world.scoring import bright_score, dark_score
from srpo.world.shapes import render, sample_scenes


def test_the_bright_score_ranks_bright_right_coloured_images_first():
    n = 40
    bright = torch.arange(n) % 2 == 0
    scenes = sample_scenes(n, seed=5, bright=bright)
    images = render(scenes)
    prompts = scenes.base_prompts()
    score = bright_score(images, prompts)
    assert score.shape == (n,)
    assert float(score[bright].mean()) > float(score[~bright].mean()) + 1.0
    assert float(dark_score(images, prompts)[~bright].mean()) > float(dark_score(images, prompts)[bright].mean())
    # the wrong colours in the prompt cost the colour-fidelity point
    swapped = scenes.base_prompts()[1:] + scenes.base_prompts()[:1]
    assert float(bright_score(images, swapped).mean()) < float(score.mean())


def test_the_grader_loads_as_a_score_only_reward_by_name():
    reward = load_reward(RewardConfig(name="score", function="shapes-bright", scale=2.0))
    scenes = sample_scenes(4, seed=1)
    images = render(scenes)
    torch.testing.assert_close(reward.score(images, scenes.base_prompts()), 2.0 * bright_score(images, scenes.base_prompts()))
