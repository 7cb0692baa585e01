"""srpo.cache.PromptCache: least recently used goes first, a call's own prompts stay, one encode per miss."""

from __future__ import annotations

import pytest

from srpo.cache import PromptCache


class CountingEncoder:
    """Encodes a prompt as its length and records every call's prompts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: list[str]) -> list[int]:
        self.calls.append(list(prompts))
        return [len(p) for p in prompts]


def test_values_come_back_in_the_order_asked_with_repeats():
    cache, encode = PromptCache(8), CountingEncoder()
    assert cache.lookup(["aa", "b", "aa", "cccc"], encode) == [2, 1, 2, 4]


def test_each_missing_prompt_is_encoded_once_in_one_call():
    cache, encode = PromptCache(8), CountingEncoder()
    cache.lookup(["x", "yy", "x"], encode)
    cache.lookup(["yy", "zzz", "x", "zzz"], encode)
    cache.lookup(["x", "yy", "zzz"], encode)  # all cached: no call
    assert encode.calls == [["x", "yy"], ["zzz"]]
    assert sum(len(call) for call in encode.calls) == len(set().union(*encode.calls))


def test_the_least_recently_used_prompt_is_evicted_first():
    cache, encode = PromptCache(3), CountingEncoder()
    cache.lookup(["a", "b", "c"], encode)
    cache.lookup(["a"], encode)  # a is now the most recent: b is the oldest
    cache.lookup(["d"], encode)
    assert list(cache) == ["c", "a", "d"] and "b" not in cache
    cache.lookup(["b"], encode)  # evicted, so encoded again
    assert encode.calls[-1] == ["b"] and list(cache) == ["a", "d", "b"]


def test_a_call_never_evicts_its_own_prompts_even_beyond_the_bound():
    cache, encode = PromptCache(2), CountingEncoder()
    cache.lookup(["old"], encode)
    out = cache.lookup(["p1", "p22", "p333"], encode)  # three prompts, bound two
    assert out == [2, 3, 4]
    assert set(cache) == {"p1", "p22", "p333"} and len(cache) == 3
    cache.lookup(["q"], encode)  # the next call shrinks back to the bound, oldest first
    assert list(cache) == ["p333", "q"]


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="max_items"):
        PromptCache(0)
    cache = PromptCache(2)
    with pytest.raises(TypeError, match="not one string"):
        cache.lookup("abc", CountingEncoder())
    with pytest.raises(ValueError, match="returned 1 values for 2 prompts"):
        cache.lookup(["a", "b"], lambda prompts: [0])
