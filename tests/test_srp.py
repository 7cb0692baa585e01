"""Reward combinations against hand-computed values."""

import pytest
import torch

from srpo.losses import hinge_loss, linear_loss, reward_loss
from srpo.srp import (cfg_reward, plain_reward, semantic_reward, sgp_reward, srp_reward, weighted_relative_reward,
                      with_control)

IMG = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
POS = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
NEG = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
RAW = torch.tensor([[1.0, 0.0], [1.0, 0.0]])


def test_control_words_are_prepended_on_the_text_side():
    assert with_control("Real", ["a cat", "a dog"]) == ["Real. a cat", "Real. a dog"]
    assert with_control("  ", ["a cat"]) == ["a cat"]


def test_reward_forms_by_hand():
    assert plain_reward(IMG, RAW).tolist() == pytest.approx([1.0, 0.6])
    assert sgp_reward(IMG, POS).tolist() == pytest.approx([0.8, 0.8])
    assert srp_reward(IMG, POS, NEG).tolist() == pytest.approx([0.8 - 0.0, 0.8 - 0.6])
    # (1 - k) neg + k pos with k = 0.25
    assert cfg_reward(IMG, POS, NEG, 0.25).tolist() == pytest.approx([0.25 * 0.8, 0.75 * 0.6 + 0.25 * 0.8])
    # (1 + k) pos - neg with k = 0.1
    assert weighted_relative_reward(IMG, POS, NEG, 0.1).tolist() == pytest.approx([1.1 * 0.8, 1.1 * 0.8 - 0.6])


def test_srp_cancels_a_bias_shared_by_both_texts():
    """A direction both prompts share (the reward's general bias) drops out of SRP."""
    bias = torch.tensor([[0.0, 0.0, 1.0]])
    img = torch.tensor([[0.2, 0.1, 0.9]])
    pos, neg = torch.tensor([[1.0, 0.0, 0.0]]) + bias, torch.tensor([[0.0, 1.0, 0.0]]) + bias
    boosted = img + torch.tensor([[0.0, 0.0, 5.0]])  # more of the biased attribute
    assert srp_reward(boosted, pos, neg) == pytest.approx(srp_reward(img, pos, neg))
    assert sgp_reward(boosted, pos) > sgp_reward(img, pos)


def test_dispatch_swaps_roles_for_the_inversion_branch():
    denoise = semantic_reward("weighted", IMG, RAW, POS, NEG, k=0.1)
    inversion = semantic_reward("weighted", IMG, RAW, NEG, POS, k=0.3)
    assert denoise.tolist() == pytest.approx(weighted_relative_reward(IMG, POS, NEG, 0.1).tolist())
    assert inversion.tolist() == pytest.approx([1.3 * 0.0 - 0.8, 1.3 * 0.6 - 0.8])
    with pytest.raises(ValueError, match="unknown reward form"):
        semantic_reward("bogus", IMG, RAW, POS, NEG)


def test_losses():
    r = torch.tensor([0.2, 0.9], requires_grad=True)
    assert hinge_loss(r, 0.7).item() == pytest.approx((0.5 + 0.0) / 2)
    hinge_loss(r, 0.7).backward()
    assert r.grad.tolist() == pytest.approx([-0.5, 0.0])  # no push once above tau
    assert linear_loss(torch.tensor([0.2, 0.4])).item() == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="unknown loss"):
        reward_loss(r, "mse")
