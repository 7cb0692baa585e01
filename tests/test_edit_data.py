"""Edit data (srpo/edit_data.py): (source image, instruction[, target]) pairs from a folder or fsspec prefix."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from srpo.edit_data import EditDataConfig, load_edit_pairs, prepare_edits


def image(path: Path, colour=(200, 30, 30), size=(24, 16)):
    Image.new("RGB", size, colour).save(path)


def folder(tmp_path: Path, lines: list, images=("a.png", "b.png", "c.png", "t.png")) -> Path:
    root = tmp_path / "edits"
    root.mkdir()
    for i, name in enumerate(images):
        image(root / name, (40 * i, 100, 200 - 40 * i))
    (root / "metadata.jsonl").write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return root


def test_pairs_are_read_in_file_order_with_normalised_instructions_and_optional_targets(tmp_path):
    root = folder(tmp_path, [{"file_name": "a.png", "instruction": "  make the   circle red "},
                             "",
                             {"file_name": "b.png", "instruction": "make it brighter", "target": "t.png"},
                             {"file_name": "a.png", "instruction": "make the circle red"}])  # a repeat: dropped
    got_root, pairs = load_edit_pairs(str(root))
    assert got_root == root
    assert [(p.source, p.instruction, p.target, p.line) for p in pairs] == [
        ("a.png", "make the circle red", None, 1), ("b.png", "make it brighter", "t.png", 3)]


def test_every_bad_line_is_refused_with_its_line_and_problem(tmp_path):
    root = folder(tmp_path, [
        {"file_name": "a.png", "instruction": "fine"},
        {"file_name": "missing.png", "instruction": "make it blue"},
        {"file_name": "broken.png", "instruction": "make it blue"},
        {"file_name": "b.png", "instruction": "   "},
        '{"file_name": "b.png", "instruction": ',
        '["b.png", "make it blue"]',
        {"instruction": "no file"},
        {"file_name": "../a.png", "instruction": "escape"},
        {"file_name": "c.png", "instruction": "x", "target": "gone.png"},
        {"file_name": "c.png", "instruction": 3},
    ])
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError) as err:
        load_edit_pairs(str(root))
    message = str(err.value)
    first = message.splitlines()[0]
    assert str(root) in first and "9 problem(s) in metadata.jsonl" in first and "fix or remove" in first, first
    for expected in ["metadata.jsonl:2: file_name: image 'missing.png' not found",
                     "metadata.jsonl:3: file_name: image 'broken.png' cannot be read",
                     "metadata.jsonl:4: empty instruction",
                     "metadata.jsonl:5: not valid JSON",
                     "metadata.jsonl:6: expected a JSON object, got list",
                     "metadata.jsonl:7: no 'file_name' field",
                     "metadata.jsonl:8: file_name: image path '../a.png' must be relative",
                     "metadata.jsonl:9: target: image 'gone.png' not found",
                     "metadata.jsonl:10: 'instruction' must be a string, got int"]:
        assert expected in message, (expected, message)
    assert "metadata.jsonl:1:" not in message


def test_a_truncated_image_is_refused(tmp_path):
    root = folder(tmp_path, [{"file_name": "a.png", "instruction": "make it blue"}])
    image(root / "big.png", size=(256, 256))
    data = (root / "big.png").read_bytes()
    (root / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="metadata.jsonl:1: file_name: image 'a.png' cannot be read"):
        load_edit_pairs(str(root))


def test_offline_training_needs_a_target_on_every_line(tmp_path):
    root = folder(tmp_path, [{"file_name": "a.png", "instruction": "make it red", "target": "t.png"},
                             {"file_name": "b.png", "instruction": "make it blue"}])
    assert len(load_edit_pairs(str(root))[1]) == 2
    with pytest.raises(ValueError, match="metadata.jsonl:2: no 'target' field"):
        load_edit_pairs(str(root), require_target=True)


def test_missing_folder_metadata_or_pairs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_edit_pairs(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no metadata.jsonl"):
        load_edit_pairs(str(tmp_path / "empty"))
    root = folder(tmp_path, ["", "  "])
    with pytest.raises(ValueError, match="lists no edit"):
        load_edit_pairs(str(root))
    with pytest.raises(ValueError, match="is a file"):
        load_edit_pairs(str(root / "a.png"))


def test_a_remote_prefix_is_mirrored_and_read_the_same(tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    root = folder(tmp_path, [{"file_name": "a.png", "instruction": "make it red", "target": "t.png"}])
    fsspec.filesystem("memory").put(str(root), "/bucket/edits", recursive=True)
    local, pairs = load_edit_pairs("memory://bucket/edits", require_target=True)
    assert pairs == load_edit_pairs(str(root), require_target=True)[1]
    assert (local / "t.png").is_file() and local != root


def test_the_split_is_disjoint_complete_and_stable_when_pairs_are_added(tmp_path):
    names = [f"{i}.png" for i in range(30)]
    lines = [{"file_name": n, "instruction": f"make it colour {i}"} for i, n in enumerate(names)]
    root = folder(tmp_path, lines, images=names)
    cfg = EditDataConfig(source=str(root), heldout_fraction=0.3, seed=4)
    split = prepare_edits(cfg)
    train, held = {p.source for p in split.train}, {p.source for p in split.heldout}
    assert train and held and not train & held and train | held == set(names)
    assert [p.line for p in split.train] == sorted(p.line for p in split.train)  # file order
    image(root / "new.png")
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "new.png", "instruction": "make it green"}) + "\n")
    again = prepare_edits(cfg)
    assert {p.source for p in again.heldout} - {"new.png"} == held  # no pair changed side
    assert len(prepare_edits(cfg.model_copy(update={"max_train": 5})).train) == 5


def test_checking_the_data_loads_no_model(tmp_path):
    root = folder(tmp_path, [{"file_name": "a.png", "instruction": "make it red"}])
    code = ("import sys; from srpo.edit_data import load_edit_pairs; load_edit_pairs(sys.argv[1]); "
            "heavy = [m for m in ('diffusers', 'transformers', 'srpo.models') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, cwd=Path(__file__).resolve().parents[1])
