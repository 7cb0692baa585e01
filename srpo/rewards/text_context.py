"""Do the control words fit the reward's text context? Checked before any model loads.

A CLIP-like reward reads at most its text context (CLIP: 77 tokens) and silently truncates the
rest; the words go first (``"<word>. <prompt>"``, :func:`srpo.srp.with_control`), so a word that
fills the context leaves no room for the prompt and the reward never reads it. Each reward's row
in :mod:`srpo.rewards.registry` names how to read its tokenizer and context without its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from srpo.rewards.registry import import_here, reward_spec
from srpo.srp import with_control


@dataclass(frozen=True)
class TextContext:
    """A reward's text side: ``count(text)`` tokens as the reward's tokenizer makes them (start and end
    tokens included, nothing truncated), of which the reward reads ``limit``."""

    count: Callable[[str], int]
    limit: int
    tokenizer: str  # what was read, for messages


def text_context(reward_cfg) -> TextContext | None:
    """The :class:`TextContext` of a :class:`~srpo.rewards.config.RewardConfig`; None for rewards that
    read no text or have no context worth checking."""
    spec = reward_spec(reward_cfg.name)
    return import_here(spec.text)(reward_cfg) if spec.text else None


def _shown(word: str, limit: int = 40) -> str:
    return repr(word) if len(word) <= limit else f"{word[:limit]!r}... ({len(word)} characters)"


def check_control_words(reward_cfg, words: Mapping[str, Sequence[str]], prompts: Sequence[str] = (),
                        reward_setting: str = "reward") -> None:
    """Refuse control words that do not fit ``reward_cfg``'s text context with the longest of ``prompts``.

    ``words``: setting name (``train.positive_words``) -> its words. Without prompts (a config checked
    before any prompt is read) the word is checked with the template alone (``"<word>. "``). When the
    longest prompt alone is over the context (the reward truncates it anyway), a word is refused only
    when it leaves no token of the prompt.
    """
    if not any(words.values()):
        return
    context = text_context(reward_cfg)
    if context is None:
        return
    longest = max(prompts, key=context.count, default="")
    prompt_tokens = context.count(longest)  # with the start and end tokens
    for setting, values in words.items():
        for i, word in enumerate(values):
            used = context.count(with_control(word, [longest])[0])
            word_tokens = used - prompt_tokens  # the word and its ". " separator
            fits = (used <= context.limit if prompt_tokens <= context.limit  # the whole prompt is read
                    else word_tokens < context.limit - 2)  # a prompt over the context alone: some of it is read
            if fits:
                continue
            with_prompt = (f"with the longest prompt ({prompt_tokens} tokens, {longest[:60]!r})" if prompts
                           else "with the control template '<word>. ' alone, before any prompt")
            room = context.limit - prompt_tokens if prompt_tokens <= context.limit else context.limit - 3
            raise ValueError(
                f"{setting}[{i}] = {_shown(word)} is {word_tokens} tokens, and {used} {with_prompt}, but "
                f"{reward_setting}.name {reward_cfg.name!r} reads {context.limit} text tokens ({context.tokenizer}): "
                f"it would truncate the text and never read the prompt; shorten the word to fit "
                f"{room} tokens with its '. ' separator\n"
                "(control words are prepended to the prompt on the reward's text side: '<word>. <prompt>')")


def check_training_words(reward_cfg, train_cfg, multi=None, prompts: Sequence[str] = ()) -> None:
    """The control words of a training run against the rewards that read them: ``train.*_words`` against
    ``reward`` (text forms only), or each ``rewards:`` entry's words against its own reward."""
    from srpo.config import TEXT_FORMS

    if multi is not None:
        for i, entry in enumerate(multi.rewards):
            if entry.form in TEXT_FORMS:
                check_control_words(entry.reward, {f"rewards[{i}].positive_words": entry.positive_words,
                                                   f"rewards[{i}].negative_words": entry.negative_words},
                                    prompts, f"rewards[{i}].reward")
    elif train_cfg.reward_form in TEXT_FORMS:
        check_control_words(reward_cfg, {"train.positive_words": train_cfg.positive_words,
                                         "train.negative_words": train_cfg.negative_words}, prompts)
