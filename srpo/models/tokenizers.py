"""Tokenizers built offline.

No tokenizer files can be downloaded here, so the tiny models carry tokenizers made from what
ships inside installed packages: CLIP's BPE vocabulary (bundled with open_clip) and a small
Unigram vocabulary for T5 built from a word list.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Iterable

CLIP_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges, read from open_clip's bundled ``bpe_simple_vocab_16e6.txt.gz``."""
    path = resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges  # type: ignore[return-value]


def clip_tokenizer(model_max_length: int = 77):
    """A transformers ``CLIPTokenizer`` equal to open_clip's (same ids), built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m) for m in merges],
                         model_max_length=model_max_length, pad_token="<|endoftext|>")


DEFAULT_T5_WORDS = (
    "a an the of and with in on at to by for from under over near behind beside photo painting "
    "image picture portrait landscape city street forest mountain river sea sky sun moon night day "
    "red green blue yellow orange purple pink black white gray brown dark bright light shadow "
    "circle square triangle star cat dog bird horse car house tree flower person woman man child "
    "old young small large big tiny detailed realistic natural lighting concept art anime flat oil "
    "render cg style colorful texture smooth rough striped dotted plain background foreground shape"
).split()


def t5_tokenizer(words: Iterable[str] = DEFAULT_T5_WORDS, model_max_length: int = 64):
    """A Unigram ``T5Tokenizer`` over a word list (plus single characters as a fallback)."""
    from transformers import T5Tokenizer

    words = list(dict.fromkeys(words))
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [("▁", -20.0)] + [(c, -30.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


#: Qwen's chat markers plus the vision markers Qwen2.5-VL's config refers to.
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
                       "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

#: A chat template in Qwen3's shape: text or a list of ``{"type": "text"}`` parts, an optional
#: generation prompt, and the empty thinking block that ``enable_thinking=False`` asks for.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def byte_level_bpe(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges, trained (deterministically) so that every word is one token.

    The 256 byte symbols come first, so any text is still encoded (spelled out where no merge
    applies); each word is learnt with and without its leading space, as Qwen's pre-tokenizer splits.
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = list(dict.fromkeys(words))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    alphabet = list(_bytes_to_unicode().values())
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 12 * len(words), min_frequency=1, show_progress=False,
                                  initial_alphabet=alphabet, special_tokens=[])
    bpe.train_from_iterator([" ".join(words), *words], trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def qwen2_tokenizer(words: Iterable[str] = DEFAULT_T5_WORDS, model_max_length: int = 64):
    """A transformers ``Qwen2Tokenizer`` (byte-level BPE, Qwen's special tokens and a chat template), built offline.

    Qwen2.5-VL (Qwen-Image), Qwen3 (FLUX.2 [klein], Z-Image) and the tiny Mistral processor use it.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = byte_level_bpe(list(words) + ["image", "describe", "color", "shape", "user", "system", "assistant"])
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok
