"""The shapes world's edit task: instructions, drawn triples and the edit grader."""

import pytest
import torch

from srpo.world.edits import (EDIT_ATTRIBUTES, Edit, all_instructions, draw_edits, edit_score, edit_summary,
                              write_edit_folder,
                              grade_edits, instruction, kept_by_attribute, parse_instruction)
from srpo.world.grader import grade
from srpo.world.shapes import COLOUR_NAMES, SHAPES


def test_every_instruction_parses_back_to_its_edit():
    texts = all_instructions()
    assert len(texts) == len(set(texts))
    for text in texts:
        edit = parse_instruction(text)
        assert instruction(edit, SHAPES.index(text.split()[2]) if edit.attribute in ("fg", "shape") else 0) == text
    assert {parse_instruction(t).attribute for t in texts} == set(EDIT_ATTRIBUTES)
    assert parse_instruction("make the circle red") == Edit("fg", COLOUR_NAMES.index("red"))
    assert parse_instruction("Make it  brighter") == Edit("brightness", True)
    with pytest.raises(ValueError, match="not a shapes-world edit"):
        parse_instruction("make the circle huge")


def test_drawn_edits_cover_every_attribute_and_change_only_the_named_one():
    triples = draw_edits(200, seed=3, attributes=EDIT_ATTRIBUTES)
    assert {e.attribute for e in triples.edits} == set(EDIT_ATTRIBUTES)
    src, tgt = triples.source_scenes, triples.target_scenes
    fields = {"fg": src.fg != tgt.fg, "bg": src.bg != tgt.bg, "shape": src.shape != tgt.shape,
              "brightness": src.bright != tgt.bright, "saturation": src.vivid != tgt.vivid}
    for i, edit in enumerate(triples.edits):
        assert [a for a, changed in fields.items() if changed[i]] == [edit.attribute]
    assert bool((tgt.fg != tgt.bg).all()) and torch.equal(src.center, tgt.center)


def test_grader_says_done_and_kept_on_targets_and_not_done_on_sources():
    triples = draw_edits(300, seed=5, attributes=EDIT_ATTRIBUTES)
    done, kept = grade_edits(triples.targets, triples.sources, triples.instructions)
    assert bool(done.all()) and bool((kept == 1).all())
    done, kept = grade_edits(triples.sources, triples.sources, triples.instructions)
    assert not bool(done.any()) and bool((kept == 1).all())
    summary = edit_summary(done, kept, triples.instructions)
    assert summary["done"] == 0.0 and set(summary["done_by_attribute"]) == set(EDIT_ATTRIBUTES)


def test_kept_counts_the_unnamed_attributes_that_changed():
    triples = draw_edits(40, seed=8)
    other = draw_edits(40, seed=9).targets  # other scenes: most unnamed attributes differ
    _, kept = grade_edits(other, triples.sources, triples.instructions)
    assert kept.mean() < 0.8
    score = edit_score(triples.targets, triples.instructions, sources=triples.sources)
    binary = torch.tensor([e.attribute in ("brightness", "saturation") for e in triples.edits])
    assert torch.equal(score[~binary], torch.full((int((~binary).sum()),), 2.0))
    assert bool((score[binary] > 2.0).all())  # past the cut in the asked direction
    assert bool((edit_score(triples.sources, triples.instructions, sources=triples.sources)[binary] < 1.0).all())
    with pytest.raises(ValueError, match="needs the source images"):
        edit_score(triples.targets, triples.instructions)


def test_binary_edits_land_in_the_other_class():
    triples = draw_edits(100, seed=4, attributes=("brightness", "saturation"))
    graded = grade(triples.targets)
    assert torch.equal(graded.bright, triples.target_scenes.bright)
    assert torch.equal(graded.vivid, triples.target_scenes.vivid)


def test_target_texts_name_the_edited_value():
    triples = draw_edits(60, seed=6, attributes=EDIT_ATTRIBUTES)
    for text, edit, src in zip(triples.target_texts, triples.edits, triples.source_texts):
        if edit.attribute == "fg":
            assert text.split()[1] == COLOUR_NAMES[edit.value] and text != src
        elif edit.attribute == "brightness":
            assert text.startswith(("bright. ", "dark. ")) and text.endswith(src)


def test_an_edit_set_written_as_a_folder_reads_back_through_the_edit_data_loader(tmp_path):
    from srpo.edit_data import load_edit_pairs

    triples = draw_edits(5, seed=12)
    root, pairs = load_edit_pairs(str(write_edit_folder(triples, tmp_path / "edits")), require_target=True)
    assert [p.instruction for p in pairs] == triples.instructions
    assert all((root / p.target).is_file() for p in pairs)


def test_the_shape_is_kept_by_its_outline_through_block_noise_and_not_by_another_scene():
    """On the VAE's 8x8 blocks a near-copy keeps the outline; another scene's shape does not (SHAPE_KEPT_IOU)."""
    from srpo.world.reward import blocks

    triples = draw_edits(200, seed=11)
    ref = blocks(triples.sources)
    noise = torch.randn(200, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.02
    near = (ref + noise.repeat_interleave(8, 2).repeat_interleave(8, 3)).clamp(0, 1)
    assert kept_by_attribute(near, ref, triples.instructions)["shape"] >= 0.95
    other = blocks(draw_edits(200, seed=12).sources)
    assert kept_by_attribute(other, ref, triples.instructions)["shape"] < 0.4


def test_images_without_a_foreground_keep_their_shape():
    from srpo.world.edits import shape_overlap

    empty, full = torch.zeros(2, 8, 8, dtype=torch.bool), torch.ones(2, 8, 8, dtype=torch.bool)
    assert shape_overlap(empty, empty).tolist() == [1.0, 1.0] and shape_overlap(full, empty).tolist() == [0.0, 0.0]
