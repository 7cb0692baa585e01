"""The one least-recently-used cache of per-prompt tensors (text features, prompt conditioning).

Policies and rewards encode the same prompts again and again (every step, every control word),
so both keep what they encoded, keyed by prompt string, up to a bound:

    cache = PromptCache(max_items=256)
    rows = cache.lookup(prompts, encode_missing)   # encode_missing(list[str]) -> per-prompt values

``encode_missing`` is called once with the prompts not yet cached (each once, in first-seen
order) and returns one value per prompt (a tensor row, or a tuple of rows). Prompts used in a
call are never evicted by that call, whatever ``max_items`` says.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence


class PromptCache:
    """Prompt string -> value, least recently used dropped first once more than ``max_items`` are kept."""

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items {max_items} must be at least 1")
        self.max_items = int(max_items)
        self._items: dict[str, Any] = {}  # insertion order = recency order, most recent last

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._items

    def __iter__(self) -> Iterator[str]:
        """The cached prompts, least recently used first."""
        return iter(list(self._items))

    def clear(self) -> None:
        self._items.clear()

    def lookup(self, prompts: Sequence[str], encode_missing: Callable[[list[str]], Sequence[Any]]) -> list[Any]:
        """The value of every prompt in ``prompts`` (in order), encoding the ones not cached in one call."""
        if isinstance(prompts, str):
            raise TypeError("lookup takes a sequence of prompts, not one string: wrap it in a list")
        unique = list(dict.fromkeys(prompts))
        missing = [p for p in unique if p not in self._items]
        if missing:
            values = list(encode_missing(missing))
            if len(values) != len(missing):
                raise ValueError(f"encode_missing returned {len(values)} values for {len(missing)} prompts")
            self._items.update(zip(missing, values))
        for p in unique:  # most recently used last
            self._items[p] = self._items.pop(p)
        out = [self._items[p] for p in prompts]
        while len(self._items) > max(self.max_items, len(unique)):
            del self._items[next(iter(self._items))]  # least recently used; never one of this call's
        return out


@contextmanager
def separate_cache(owner: object, attribute: str) -> Iterator[PromptCache]:
    """Inside the block ``owner.<attribute>`` is a fresh, empty :class:`PromptCache`; the original comes back after.

    For work beside training (the guard's held-out checks): their prompts neither evict the
    training's cached encodings nor leave their own behind, so training encodes exactly what it
    would have encoded without them (an encoding can differ in its last bit with the batch it was
    computed in).
    """
    original = getattr(owner, attribute, None)
    if original is None:  # nothing cached there (a reward without a text side)
        yield None
        return
    setattr(owner, attribute, PromptCache(original.max_items))
    try:
        yield getattr(owner, attribute)
    finally:
        setattr(owner, attribute, original)
