"""The method table: one object per train.method name, chosen once, with the checks it owns."""

import typing

import pytest

from srpo.config import RolloutConfig, TrainConfig
from srpo.training.methods import METHODS, Method, method_for


def test_every_configurable_method_has_exactly_one_entry():
    names = set(typing.get_args(TrainConfig.model_fields["method"].annotation))
    assert set(METHODS) == names
    for name in names:
        method = method_for(TrainConfig(method=name, inversion=name == "srpo"))
        assert isinstance(method, Method) and method.name == name


def test_only_srpo_trains_the_inversion_branch():
    assert method_for(TrainConfig()).branches(TrainConfig()) == ("denoise", "inversion")
    assert method_for(TrainConfig()).branches(TrainConfig(inversion=False)) == ("denoise",)
    for name in set(METHODS) - {"srpo"}:
        cfg = TrainConfig(method=name, inversion=False)
        assert method_for(cfg).branches(cfg) == ("denoise",)


def test_draft_refuses_more_steps_than_the_rollout_has():
    cfg = TrainConfig(method="draft", inversion=False, draft_steps=5)
    with pytest.raises(ValueError, match=r"^train.draft_steps 5 exceeds the rollout's 4 steps"):
        method_for(cfg).check(cfg, RolloutConfig(num_steps=4))
    method_for(cfg).check(cfg, RolloutConfig(num_steps=5))
