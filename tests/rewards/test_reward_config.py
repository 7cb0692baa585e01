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


@pytest.mark.parametrize("name", FEATURE_REWARDS + ("hpsv3",))
@pytest.mark.parametrize("form", ["plain", "sgp", "srp", "cfg", "weighted"])
def test_feature_and_joint_rewards_train_with_every_text_form(name, form):
    check_trainable(RewardConfig(name=name), form)


@pytest.mark.parametrize("name", FEATURE_REWARDS + ("hpsv3",))
def test_image_relative_is_refused_for_rewards_that_read_text_with_the_fix(name):
    with pytest.raises(ValueError) as info:
        check_trainable(RewardConfig(name=name), "image_relative")
    first_line = str(info.value).splitlines()[0]
    assert f"reward.name is {name!r}, which reads text" in first_line and "'weighted'" in first_line


@pytest.mark.parametrize("form", ["sgp", "srp", "cfg", "weighted"])
def test_text_forms_are_refused_for_an_image_only_reward_with_the_fix(form):
    with pytest.raises(ValueError) as info:
        check_trainable(RewardConfig(name="aesthetic_v2.5"), form)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f"reward.name 'aesthetic_v2.5' reads no text, so reward form {form!r}")
    assert "'image_relative'" in first_line
    check_trainable(RewardConfig(name="aesthetic_v2.5"), "image_relative")
    check_trainable(RewardConfig(name="aesthetic_v2.5"), "plain")
