"""Publishing the world (builtin names resolve to it), the fingerprint, and the report's measures."""

import pytest
import torch

from srpo.published import publish, published_fingerprint, published_path, read_record, resolve_builtin
from srpo.rewards import RewardConfig
from srpo.world.report import WorldReportConfig, compare, measure, steering_from_words, table
from srpo.world.shapes import draw


def test_publish_resolves_builtin_names_and_changes_the_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="shapes_bootstrap"):
        resolve_builtin("policy", "builtin:shapes-flux")
    assert published_fingerprint() == "unpublished"
    src = tmp_path / "src"
    src.mkdir()
    (src / "model_index.json").write_text("{}")
    publish("shapes-flux", src, {"pipeline_run": "r1"})
    first = published_fingerprint()
    assert resolve_builtin("policy", "builtin:shapes-flux") == published_path("shapes-flux")
    assert (published_path("shapes-flux") / "model_index.json").read_text() == "{}"
    assert read_record()["shapes-flux"]["pipeline_run"] == "r1"
    (src / "model_index.json").write_text('{"changed": 1}')
    publish("shapes-flux", src)
    assert published_fingerprint() != first
    assert RewardConfig(name="hf_clip", checkpoint="builtin:shapes-clip").world_model == "shapes-clip"
    with pytest.raises(ValueError, match="hf_clip"):
        RewardConfig(name="clip", checkpoint="builtin:shapes-clip")


def test_steering_is_read_from_the_control_words():
    s = steering_from_words(["bright"])
    assert (s.attribute, s.towards, s.flag_name) == ("brightness", True, "bright")
    assert steering_from_words(["Detail", "muted"]).towards is False
    with pytest.raises(ValueError, match="attribute word"):
        steering_from_words(["Detail"])


def test_measure_and_compare_on_drawn_images():
    n = 40
    dark, _, scenes = draw(n, 1, bright=torch.zeros(n, dtype=torch.bool))
    bright = draw(n, 1, bright=torch.ones(n, dtype=torch.bool))[0]
    prompts = scenes.base_prompts()
    steering = steering_from_words(["bright"])
    before, after = measure(dark, prompts, steering), measure(bright, prompts, steering)
    assert before["steered_share"] == 0.0 and after["steered_share"] == 1.0
    assert before["colours"] == after["colours"] == 1.0
    result = compare(before, after, WorldReportConfig())
    assert result["movement_reached"] and result["fidelity_kept"] and result["movement"] == 1.0
    text = table(result, steering, n)
    assert "share bright" in text and "+100.0pp" in text and "reached" in text
