"""Control words that do not fit the reward's text context are refused, with token counts, before a model loads."""

from __future__ import annotations

import pytest

from srpo.config import TrainConfig
from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.config import MultiRewardConfig
from srpo.rewards.text_context import check_control_words, check_training_words, text_context

LONG = "x" * 10_000


@pytest.mark.parametrize("name", ["clip", "hf_clip"])
def test_the_context_read_without_weights_is_what_the_loaded_reward_reads(name):
    """Token counts and the limit agree with the loaded reward's own tokenizer: the text it keeps is
    ``limit`` tokens, cut exactly where the counted text passes it."""
    cfg = RewardConfig(name=name, checkpoint="builtin:tiny")
    context = text_context(cfg)
    reward = load_reward(cfg)
    text = "a red square on a blue background " * 20
    if name == "clip":
        kept = reward.tokenizer([text])[0]  # [context_length], zero padded
        assert kept.numel() == context.limit and int((kept != 0).sum()) == context.limit
        assert context.count(text) == len(reward.tokenizer.encode(text)) + 2
    else:
        kept = reward.tokenizer([text], truncation=True, max_length=reward.max_length)["input_ids"][0]
        assert reward.max_length == context.limit == len(kept)
        assert context.count(text) == len(reward.tokenizer(text)["input_ids"])
    assert context.count(text) > context.limit  # this text would lose its end


@pytest.mark.parametrize("name", ["clip", "hf_clip"])
def test_a_word_of_ten_thousand_characters_is_refused_naming_the_setting_counts_and_limit(name, monkeypatch):
    cfg = RewardConfig(name=name, checkpoint="builtin:tiny")
    monkeypatch.setattr("srpo.rewards.load_reward", lambda *a, **k: pytest.fail("a reward loaded"))
    with pytest.raises(ValueError) as err:
        check_control_words(cfg, {"train.positive_words": ["Real", LONG]})
    first = str(err.value).splitlines()[0]
    assert first.startswith("train.positive_words[1] = 'xxxx") and "(10000 characters)" in first, first
    assert "is 2501 tokens, and 2503 with the control template" in first, first
    assert f"reward.name {name!r} reads 77 text tokens" in first and "shorten the word to fit 75 tokens" in first, first


def test_a_word_that_fits_alone_but_not_with_the_longest_prompt_is_refused():
    cfg = RewardConfig(name="clip", checkpoint="builtin:tiny")
    context = text_context(cfg)
    prompts = ["a cat", "a " + "very " * 40 + "large red square"]  # the second is the longest
    word = "bright " * 40
    check_control_words(cfg, {"train.positive_words": [word]})  # fits with the template alone
    check_control_words(cfg, {"train.positive_words": ["Real"]}, prompts)
    with pytest.raises(ValueError) as err:
        check_control_words(cfg, {"train.negative_words": [word]}, prompts)
    first = str(err.value).splitlines()[0]
    prompt_tokens = context.count(prompts[1])
    assert first.startswith("train.negative_words[0] = ") and f"longest prompt ({prompt_tokens} tokens" in first, first
    assert f"shorten the word to fit {context.limit - prompt_tokens} tokens" in first, first
    too_long = ["word " * 100]  # a prompt over the context alone: words are refused only when no prompt token is left
    check_control_words(cfg, {"train.positive_words": ["Real"]}, too_long)
    with pytest.raises(ValueError, match=r"^train.positive_words\[0\]"):
        check_control_words(cfg, {"train.positive_words": [LONG]}, too_long)


def test_training_words_are_checked_against_the_reward_that_reads_them():
    clip = RewardConfig(name="clip", checkpoint="builtin:tiny")
    with pytest.raises(ValueError, match=r"^train.positive_words\[0\]"):
        check_training_words(clip, TrainConfig(positive_words=[LONG]))
    check_training_words(clip, TrainConfig(positive_words=[LONG], reward_form="plain", inversion=False))  # unused
    aesthetic = RewardConfig(name="aesthetic_v2.5", checkpoint="builtin:tiny")
    assert text_context(aesthetic) is None and text_context(RewardConfig(name="score", function="shapes-bright")) is None
    multi = MultiRewardConfig(rewards=[
        {"reward": clip, "positive_words": ["Real"], "negative_words": ["Flat"]},
        {"reward": clip.model_dump(), "name": "b", "positive_words": ["Real"], "negative_words": [LONG]}])
    with pytest.raises(ValueError, match=r"^rewards\[1\].negative_words\[0\] .* rewards\[1\].reward.name 'clip'"):
        check_training_words(clip, TrainConfig(), multi)
