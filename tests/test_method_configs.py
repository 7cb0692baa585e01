"""The settings of the other methods (NFT, AWM, MixGRPO, DRTune): the authors' defaults and clear refusals."""

import pytest
from pydantic import ValidationError

from srpo.config import AWMConfig, DRTuneConfig, MixGRPOConfig, NFTConfig


def test_defaults_are_the_authors():
    nft = NFTConfig()
    assert (nft.beta, nft.advantage_clip, nft.kl, nft.train_fraction) == (1.0, 5.0, 1e-4, 0.99)
    assert (nft.decay_flat, nft.decay_rate, nft.decay_cap) == (0, 0.001, 0.5)  # the authors' decay type 1
    assert nft.adaptive_weighting and nft.global_std and nft.loss_scale == 5.0
    awm = AWMConfig()
    assert (awm.weighting, awm.ghuber_power, awm.num_train_steps, awm.train_fraction) == ("ghuber", 0.25, 6, 0.9)
    assert (awm.advantage_clip, awm.advantage_max, awm.kl, awm.ema_kl, awm.ema_decay_cap) == (5.0, 1.0, 1e-3, 1.0, 0.3)
    mix = MixGRPOConfig()
    assert (mix.mode, mix.window_size, mix.shift_every, mix.stride, mix.roll_back) == ("sliding", 4, 25, 1, True)
    dr = DRTuneConfig()
    assert (dr.num_train_steps, dr.early_stop_ratio) == (3, 0.4) and dr.stop_window(25) == 10
    assert DRTuneConfig(early_stop=0).stop_window(25) == 0  # the final image


@pytest.mark.parametrize("model, bad, match", [
    (NFTConfig, {"beta": 0}, "beta"),
    (NFTConfig, {"decay_cap": 1.0}, "decay_cap"),
    (NFTConfig, {"train_fraction": 1.5}, "train_fraction"),
    (AWMConfig, {"weighting": "huber"}, "weighting"),
    (AWMConfig, {"ghuber_power": 0}, "ghuber_power"),
    (MixGRPOConfig, {"window_size": 0}, "window_size"),
    (MixGRPOConfig, {"mode": "random"}, "mode"),
    (DRTuneConfig, {"num_train_steps": 0}, "num_train_steps"),
    (NFTConfig, {"bata": 1.0}, "bata"),  # a typo is an error, not a silently dropped key
])
def test_impossible_values_are_refused_naming_the_field(model, bad, match):
    with pytest.raises(ValidationError, match=match):
        model(**bad)


def test_a_branch_range_must_hold_the_window_and_belongs_to_the_branch_mode():
    assert MixGRPOConfig(mode="branch", window_size=2, branch_range=(0, 5)).branch_range == (0, 5)
    with pytest.raises(ValidationError, match=r"branch_range \[3, 4\] does not hold a window of 2 steps"):
        MixGRPOConfig(mode="branch", window_size=2, branch_range=(3, 4))
    with pytest.raises(ValidationError, match="mode is sliding: drop it or use mode: branch"):
        MixGRPOConfig(branch_range=(0, 5))


def test_drtune_takes_one_early_stop_setting():
    with pytest.raises(ValidationError, match="sets both early_stop .* give one"):
        DRTuneConfig(early_stop=5, early_stop_ratio=0.2)
    assert DRTuneConfig(early_stop=5).stop_window(25) == 5
    assert DRTuneConfig(early_stop_ratio=0.2).stop_window(25) == 5
