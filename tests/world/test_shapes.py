"""The shapes world: deterministic drawing, captions in the control-word format, parsing."""

import pytest
import torch

from srpo.world.shapes import (BINARY_ATTRIBUTES, COLOUR_NAMES, SHAPES, all_base_prompts, captions, draw,
                               parse_prompt, sample_scenes)


def test_same_seed_same_images_other_seed_other_images():
    a, caps_a, _ = draw(16, seed=3)
    b, caps_b, _ = draw(16, seed=3)
    c, _, _ = draw(16, seed=4)
    assert torch.equal(a, b) and caps_a == caps_b
    assert not torch.equal(a, c)
    assert a.shape == (16, 3, 64, 64) and 0 <= a.min() and a.max() <= 1


def test_foreground_and_background_colours_differ_and_cover_the_palette():
    scenes = sample_scenes(2000, seed=0)
    assert bool((scenes.fg != scenes.bg).all())
    assert set(scenes.fg.tolist()) == set(range(len(COLOUR_NAMES)))
    assert set(scenes.shape.tolist()) == set(range(len(SHAPES)))
    assert 0.4 < scenes.bright.float().mean() < 0.6 and 0.4 < scenes.vivid.float().mean() < 0.6


def test_captions_prefix_true_attribute_words_in_the_srp_format():
    scenes = sample_scenes(200, seed=1)
    caps = captions(scenes, seed=2, attribute_prob=1.0)
    for cap, bright, vivid in zip(caps, scenes.bright, scenes.vivid):
        parsed = parse_prompt(cap)
        assert parsed["brightness"] == bool(bright) and parsed["saturation"] == bool(vivid)
    plain = captions(scenes, seed=2, attribute_prob=0.0)
    assert plain == scenes.base_prompts()
    assert all(". " not in p for p in plain)


def test_parse_prompt_round_trips_every_base_prompt_and_rejects_others():
    prompts = all_base_prompts()
    assert len(prompts) == len(set(prompts)) == 60
    for p in prompts:
        parsed = parse_prompt(p)
        assert f"a {COLOUR_NAMES[parsed['fg']]} {SHAPES[parsed['shape']]} on a {COLOUR_NAMES[parsed['bg']]} background" == p
    assert parse_prompt("bright. muted. " + prompts[0])["brightness"] is True
    with pytest.raises(ValueError, match="not a shapes-world caption"):
        parse_prompt("a cat on a mat")


def test_fixed_attributes_are_respected():
    n = 8
    _, _, scenes = draw(n, 0, bright=torch.ones(n, dtype=torch.bool), vivid=torch.zeros(n, dtype=torch.bool))
    assert bool(scenes.bright.all()) and not bool(scenes.vivid.any())
    assert set(BINARY_ATTRIBUTES) == {"brightness", "saturation"}
