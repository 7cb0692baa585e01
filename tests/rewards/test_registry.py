"""srpo.rewards.registry: one row per reward feeds the config's names, loading and the memory plan."""

from __future__ import annotations

import inspect

import pytest

from srpo.rewards import RewardConfig, load_reward
from srpo.rewards import config as reward_config
from srpo.rewards.registry import REWARDS, Tower, import_here, names, reward_spec


def test_every_row_names_functions_that_exist_in_this_package():
    for spec in REWARDS.values():
        for target in filter(None, (spec.load, spec.tiny, spec.text)):
            assert callable(import_here(target)), (spec.name, target)
        if spec.tiny:  # one builder signature: fn(name=..., seed=...)
            assert {"name", "seed"} <= set(inspect.signature(import_here(spec.tiny)).parameters), spec.name
        assert (spec.tower is None) == (spec.kind == "score_only"), spec.name  # every model has its published cost
        assert spec.tower is None or (isinstance(spec.tower, Tower) and spec.tower.params > 0)


def test_the_config_names_are_views_of_the_table():
    assert set(names()) == set(REWARDS) and reward_config.KNOWN_REWARDS == names("feature", "joint", "image_only")
    assert set(reward_config.FEATURE_REWARDS) == set(reward_config.OPEN_CLIP_REWARDS + reward_config.HF_CLIP_REWARDS)
    assert reward_config.JOINT_REWARDS == ("hpsv3",) and reward_config.IMAGE_ONLY_REWARDS == ("aesthetic_v2.5",)
    with pytest.raises(ValueError, match="unknown reward 'nope': choose one of hpsv2.1, clip"):
        reward_spec("nope")


@pytest.mark.parametrize("name", ["clip", "hf_clip", "hpsv3", "aesthetic_v2.5"])
def test_a_loaded_reward_is_of_its_rows_kind(name):
    reward = load_reward(RewardConfig(name=name, checkpoint="builtin:tiny"))
    kind = REWARDS[name].kind
    assert bool(getattr(reward, "is_joint", False)) == (kind == "joint")
    assert bool(getattr(reward, "is_image_only", False)) == (kind == "image_only")
    score = load_reward(RewardConfig(name="score", function="shapes-bright"))
    assert score.score_only and REWARDS["score"].kind == "score_only"
