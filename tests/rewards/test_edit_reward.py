"""The edit reward: agreement with the target text and consistency with the source, as multi-reward terms."""

import pytest
import torch

from srpo.rewards.combine import MultiReward, RewardTerm, load_multi_reward
from srpo.rewards.config import MultiRewardConfig, WeightedRewardConfig
from srpo.rewards.scores import ScoreReward, resolve_score
from srpo.world.edits import draw_edits
from tests.rewards.helpers import PaletteReward


def edit_reward(weight_keep=0.5):
    model = PaletteReward()
    return MultiReward([RewardTerm(name="target", reward=model, form="plain"),
                        RewardTerm(name="keep", reward=model, form="plain", against="source", weight=weight_keep)])


def test_edit_reward_prefers_the_target_to_the_source_and_is_differentiable():
    triples = draw_edits(32, seed=2, attributes=("fg", "bg"))
    reward = edit_reward()
    texts = triples.target_texts
    on_target, parts_t = reward(triples.targets, texts, sources=triples.sources)
    on_source, parts_s = reward(triples.sources, texts, sources=triples.sources)
    assert bool((on_target > on_source).all())
    assert torch.allclose(parts_s["keep"], torch.ones(32), atol=1e-5)  # the source is its own best copy
    edited = triples.targets.clone().requires_grad_(True)
    total, _ = reward(edited, texts, sources=triples.sources)
    total.sum().backward()
    assert edited.grad is not None and edited.grad.abs().sum() > 0


def test_consistency_is_maximal_for_the_source_itself(tmp_path):
    cfg = MultiRewardConfig(rewards=[
        {"name": "target", "reward": {"name": "hf_clip", "checkpoint": "builtin:tiny"}, "form": "weighted",
         "positive_words": ["vivid"], "negative_words": ["muted"]},
        {"name": "keep", "reward": {"name": "hf_clip", "checkpoint": "builtin:tiny"}, "against": "source",
         "form": "plain", "weight": 0.5}])
    multi = load_multi_reward(cfg)
    assert len(multi.models) == 1  # both terms read one loaded model
    triples = draw_edits(6, seed=1)
    noisy = (triples.sources + 0.2 * torch.randn(triples.sources.shape, generator=torch.Generator().manual_seed(0))
             ).clamp(0, 1)
    candidates = [triples.sources, triples.targets, noisy]
    keep = [multi(x, triples.target_texts, sources=triples.sources)[1]["keep"] for x in candidates]
    assert bool((keep[0] >= keep[1] - 1e-6).all()) and bool((keep[0] >= keep[2] - 1e-6).all())
    assert bool((keep[0] > keep[2]).any())
    edited = triples.targets.clone().requires_grad_(True)
    for branch in ("denoise", "inversion"):
        total, parts = multi(edited, triples.target_texts, sources=triples.sources, branch=branch)
        assert set(parts) == {"target", "keep"}
    torch.autograd.grad(total.sum(), edited)  # differentiable on both terms' path
    with pytest.raises(ValueError, match="no sources were given"):
        multi(triples.targets, triples.target_texts)


def test_source_entries_are_checked():
    clip = {"name": "hf_clip", "checkpoint": "builtin:tiny"}
    with pytest.raises(ValueError, match="against 'source' takes no control words"):
        WeightedRewardConfig(reward=clip, against="source", form="srp", positive_words=["a"], negative_words=["b"])
    with pytest.raises(ValueError, match="has none"):
        WeightedRewardConfig(reward={"name": "aesthetic_v2.5", "checkpoint": "builtin:tiny"}, against="source",
                             form="plain")


def test_the_worlds_grader_is_a_score_only_edit_judge():
    triples = draw_edits(20, seed=4, attributes=("fg", "bg", "shape"))
    judge = ScoreReward(resolve_score("shapes-edit"), "shapes-edit")
    on_target = judge.score(triples.targets, triples.instructions, sources=triples.sources)
    on_source = judge.score(triples.sources, triples.instructions, sources=triples.sources)
    assert torch.equal(on_target, torch.full((20,), 2.0)) and torch.equal(on_source, torch.ones(20))


def test_the_directional_term_is_zero_for_the_source_and_rewards_the_asked_change():
    triples = draw_edits(32, seed=7, attributes=("fg", "bg"))
    model = PaletteReward()
    multi = MultiReward([RewardTerm(name="direction", reward=model, form="plain", against="direction")])
    kwargs = dict(sources=triples.sources, source_prompts=triples.source_texts)
    on_source = multi(triples.sources, triples.target_texts, **kwargs)[0]
    on_target = multi(triples.targets, triples.target_texts, **kwargs)[0]
    assert torch.allclose(on_source, torch.zeros(32), atol=1e-6) and bool((on_target > 0).all())
    reverse = multi(triples.sources, triples.target_texts, sources=triples.targets,  # the image moves back
                    source_prompts=triples.source_texts)[0]
    assert bool((reverse < 0).all())
    with pytest.raises(ValueError, match="needs one source caption per edited image"):
        multi(triples.targets, triples.target_texts, sources=triples.sources)


def test_the_structure_term_holds_the_outline_and_ignores_the_colours():
    """Recolour / tone edits keep the source's edges (about 1); another scene's layout does not; a contrast change
    is invisible to it; it is differentiable in the edited image and a penalty on the inversion branch."""
    triples = draw_edits(24, seed=3)
    multi = MultiReward([RewardTerm(name="structure", reward=PaletteReward(), form="plain", against="structure")])
    score = lambda x, src=triples.sources: multi(x, triples.target_texts, sources=src)[0]  # noqa: E731
    assert torch.allclose(score(triples.sources), torch.ones(24), atol=1e-5)
    on_target, elsewhere = score(triples.targets), score(draw_edits(24, seed=11).sources)
    assert bool((on_target > 0.99).all()) and bool((elsewhere < on_target - 0.3).all())
    faded = 0.5 + 0.4 * (triples.sources - 0.5)
    assert bool((score(faded) > 0.995).all())  # eps aside, the edges scale with the contrast
    small = torch.nn.functional.interpolate(triples.sources, scale_factor=0.5, mode="area")  # sources resized
    assert bool((score(triples.sources, small) > 0.9).all())
    edited = triples.targets.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(edited).sum(), edited)
    assert grad.abs().sum() > 0
    inverted = multi(triples.targets, triples.target_texts, sources=triples.sources, branch="inversion")[0]
    assert torch.allclose(inverted, -on_target)


def test_a_structure_entry_loads_as_a_term_sharing_its_reward():
    clip = {"name": "hf_clip", "checkpoint": "builtin:tiny"}
    cfg = MultiRewardConfig(rewards=[{"name": "target", "reward": clip, "form": "plain"},
                                     {"name": "outline", "reward": clip, "against": "structure", "form": "plain"}])
    multi = load_multi_reward(cfg)
    assert len(multi.models) == 1 and multi.terms[1].against == "structure"
    with pytest.raises(ValueError, match="against 'structure' takes no control words"):
        WeightedRewardConfig(reward=clip, against="structure", form="sgp", positive_words=["a"])
