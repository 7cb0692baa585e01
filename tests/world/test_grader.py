"""The grader reads every attribute back from pixels (drawn images and the VAE's 8x8-block images)."""

import torch

from srpo.world.grader import fidelity, grade, shares
from srpo.world.reward import blocks
from srpo.world.shapes import draw


def test_grader_is_exact_on_drawn_images():
    images, caps, scenes = draw(300, seed=11, attribute_prob=1.0)
    graded = grade(images)
    assert fidelity(graded, caps) == {"fg": 1.0, "bg": 1.0, "colours": 1.0, "shape": 1.0,
                                      "brightness": 1.0, "saturation": 1.0}
    assert torch.equal(graded.bright, scenes.bright) and torch.equal(graded.vivid, scenes.vivid)


def test_grader_reads_colours_brightness_saturation_of_block_images():
    images, caps, _ = draw(300, seed=12, attribute_prob=1.0)
    fid = fidelity(grade(blocks(images)), caps)
    assert fid["colours"] == 1.0 and fid["brightness"] == 1.0 and fid["saturation"] == 1.0
    assert fid["shape"] > 0.5  # 8x8 pixel art keeps the shape only roughly


def test_a_flat_image_has_no_foreground_and_grey_is_neither_bright_nor_vivid():
    flat = torch.full((2, 3, 64, 64), 0.3)
    graded = grade(flat)
    assert graded.fg.tolist() == [-1, -1]
    assert shares(graded)["bright"] == 0.0 and shares(graded)["vivid"] == 0.0
