"""RewardConfig validation: names, family-specific fields, built-in checkpoints."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from srpo.rewards import FEATURE_REWARDS, KNOWN_REWARDS, RewardConfig
from srpo.rewards.config import check_trainable


def test_defaults():
    config = RewardConfig(name="hpsv2.1")
    assert (config.architecture, config.checkpoint, config.scale, config.seed) == ("ViT-H-14", None, None, 0)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValidationError) as info:
        RewardConfig(name="hpsv4")
    message = str(info.value)
    assert "hpsv4" in message
    assert all(name in message for name in KNOWN_REWARDS)


def test_unknown_field_is_refused():
    with pytest.raises(ValidationError, match="chekpoint"):
        RewardConfig(name="clip", chekpoint="x.pt")


def test_processor_path_only_for_transformers_rewards():
    RewardConfig(name="pickscore", processor_path="/models/clip-h")
    with pytest.raises(ValidationError, match="processor_path"):
        RewardConfig(name="hpsv2.1", processor_path="/models/clip-h")


def test_architecture_only_for_open_clip_rewards():
    with pytest.raises(ValidationError, match="architecture"):
        RewardConfig(name="pickscore", architecture="ViT-H-14")


def test_unknown_builtin_checkpoint():
    with pytest.raises(ValidationError, match="builtin:tiny"):
        RewardConfig(name="clip", checkpoint="builtin:huge")


@pytest.mark.parametrize("name", FEATURE_REWARDS)
def test_feature_rewards_are_trainable(name):
    check_trainable(RewardConfig(name=name))


@pytest.mark.parametrize("name, why", [("hpsv3", "scores image and prompt jointly"), ("aesthetic_v2.5", "reads no text")])
def test_joint_and_image_only_rewards_are_refused_for_training_with_the_fix(name, why):
    with pytest.raises(ValueError) as info:
        check_trainable(RewardConfig(name=name))
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f"reward.name {name!r} cannot be the training reward yet: it {why}")
    assert all(feature in first_line for feature in FEATURE_REWARDS)
    assert f"name {name!r} under extra_rewards:" in first_line
