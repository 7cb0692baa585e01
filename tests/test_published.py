"""srpo.published: the one registry of builtin: names, per kind, with clear errors for unknown ones."""

from __future__ import annotations

import pytest

from srpo import published
from srpo.config import PolicyConfig
from srpo.published import builtin_names, is_builtin, lookup_builtin, register_builtin, resolve_builtin
from srpo.rewards import RewardConfig


def test_each_kind_lists_its_own_names():
    assert "builtin:tiny-flux" in builtin_names("policy") and "builtin:shapes-flux" in builtin_names("policy")
    assert {"builtin:tiny", "builtin:shapes-clip"} <= set(builtin_names("reward"))
    assert "builtin:tiny" in builtin_names("metric")
    assert "builtin:tiny-flux" not in builtin_names("reward")  # a policy name is no reward
    assert is_builtin("builtin:x") and not is_builtin("org/model") and not is_builtin(None)


@pytest.mark.parametrize("kind", ["policy", "reward", "metric"])
def test_an_unknown_name_is_refused_with_the_known_ones_of_its_kind(kind):
    with pytest.raises(ValueError) as err:
        resolve_builtin(kind, "builtin:no-such-model")
    message = str(err.value)
    assert message.startswith(f"unknown built-in {kind} 'builtin:no-such-model'")
    assert all(name in message for name in builtin_names(kind))


def test_configs_refuse_unknown_builtins_before_anything_loads():
    with pytest.raises(ValueError, match=r"unknown built-in policy 'builtin:tiny-flx'.*builtin:tiny-flux"):
        PolicyConfig(pretrained="builtin:tiny-flx")
    with pytest.raises(ValueError, match=r"unknown built-in reward 'builtin:tiny-flux'.*builtin:tiny"):
        RewardConfig(name="hf_clip", checkpoint="builtin:tiny-flux")


def test_one_call_registers_a_builtin_and_resolves_it(tmp_path, monkeypatch):
    monkeypatch.setattr(published, "_REGISTRY", dict(published._REGISTRY))  # leave the real registry as it was
    calls = []

    def build(*, family, seed):
        calls.append((family, seed))
        return tmp_path / f"{family}-{seed}"

    register_builtin("metric", "test-only", build, "a folder for this test")
    assert "builtin:test-only" in builtin_names("metric")
    assert resolve_builtin("metric", "builtin:test-only", family="clip_score", seed=3) == tmp_path / "clip_score-3"
    assert calls == [("clip_score", 3)] and lookup_builtin("metric", "builtin:test-only").kind == "metric"
    with pytest.raises(ValueError, match="registered twice"):
        register_builtin("metric", "test-only", build, "again")
    with pytest.raises(ValueError, match="unknown built-in kind 'vae'"):
        register_builtin("vae", "x", build, "no such kind")


def test_a_world_model_not_yet_published_says_how_to_publish_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="shapes_bootstrap"):
        resolve_builtin("reward", "builtin:shapes-clip")
    with pytest.raises(FileNotFoundError, match=r"shapes-kontext.*--config configs/shapes_bootstrap_edit\.yaml "):
        resolve_builtin("policy", "builtin:shapes-kontext")
