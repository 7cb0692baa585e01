"""Find control words that suit a reward: rank candidates by how well they separate two looks.

SRP moves images along ``f_txt(word + p) - f_txt(p)`` on the reward's text side; a word suits
a reward when that direction, under the reward's image features, tells the look you want (set A)
from the look you do not (set B). For each candidate word ``w`` and prompt ``p``::

    d_w(p)      = f_txt("w. p") - f_txt(p)                                 [D]
    s_w(x)      = mean over prompts p of <f_img(x), d_w(p)>                 per image
    separation  = (mean_A s_w - mean_B s_w) / pooled std of s_w             Cohen's d

so a large positive separation means "adding w to the prompt raises the reward of A-looking
images relative to B-looking ones": ``w`` is a positive control word for the look A (and a
negative one for B). The interval is a percentile bootstrap that resamples images of both sets
and the prompts. ``auc`` is the share of (A, B) pairs that ``s_w`` orders correctly.

Feature rewards (CLIP-like) compute ``f_img`` once and every ``f_txt`` once; joint rewards
(HPSv3) score ``score(x, "w. p") - score(x, p)`` for every image, prompt and word (costly).
Image-only rewards have no text side and are refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from srpo.srp import with_control

#: Columns of the report table, in order.
COLUMNS = ["rank", "word", "separation", "low", "high", "auc", "mean_a", "mean_b"]


@dataclass(frozen=True)
class WordScore:
    """One candidate's separation of set A from set B, with its bootstrap interval."""

    rank: int
    word: str
    separation: float
    low: float
    high: float
    auc: float
    mean_a: float
    mean_b: float

    def row(self) -> dict:
        return asdict(self)


def check_inputs(images_a: torch.Tensor, images_b: torch.Tensor, prompts: Sequence[str],
                 candidates: Sequence[str]) -> list[str]:
    """Validate the inputs; returns the candidates stripped and de-duplicated (order kept)."""
    for name, images in (("images_a", images_a), ("images_b", images_b)):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 2:
            raise ValueError(f"{name} has shape {tuple(images.shape)}: give at least 2 images as [N, 3, H, W] in [0, 1]")
    if not prompts:
        raise ValueError("prompts is empty: give the prompts the control words will be used with")
    words = list(dict.fromkeys(w.strip() for w in candidates if w.strip()))
    if not words:
        raise ValueError("candidates is empty: give candidate words (the paper's lists, your own or a vocabulary)")
    return words


@torch.no_grad()
def direction_scores(reward, images: torch.Tensor, prompts: Sequence[str], words: Sequence[str],
                     batch_size: int = 32) -> torch.Tensor:
    """``<f_img(x), f_txt("w. p") - f_txt(p)>`` for every word, prompt and image: ``[W, P, N]``."""
    if getattr(reward, "is_image_only", False):
        raise ValueError("this reward reads no text, so no word can be put on its text side: the control-word "
                         "finder needs a reward with a text input (HPS, PickScore, CLIP, HPSv3)")
    prompts = list(prompts)
    if getattr(reward, "is_joint", False):
        return _joint_direction_scores(reward, images, prompts, words, batch_size)
    img = torch.cat([reward.image_features(chunk) for chunk in images.split(batch_size)]).float()  # [N, D]
    plain = reward.text_features(prompts).float()  # [P, D]
    dirs = torch.stack([reward.text_features(with_control(w, prompts)).float() - plain for w in words])  # [W, P, D]
    return torch.einsum("wpd,nd->wpn", dirs, img)


def _joint_direction_scores(reward, images: torch.Tensor, prompts: list[str], words: Sequence[str],
                            batch_size: int) -> torch.Tensor:
    """``score(x, "w. p") - score(x, p)`` for a joint reward: ``[W, P, N]`` (one forward per image and variant)."""
    def scores(variant: list[str]) -> torch.Tensor:  # [P, N]
        rows = []
        for p in variant:
            rows.append(torch.cat([reward.score(chunk, [p] * len(chunk)).float() for chunk in images.split(batch_size)]))
        return torch.stack(rows)

    plain = scores(prompts)
    return torch.stack([scores(with_control(w, prompts)) - plain for w in words])


def separation(s_a: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
    """Cohen's d of ``[..., Na]`` vs ``[..., Nb]`` along the last axis: ``[...]``."""
    na, nb = s_a.shape[-1], s_b.shape[-1]
    pooled = ((na - 1) * s_a.var(-1) + (nb - 1) * s_b.var(-1)) / (na + nb - 2)
    return (s_a.mean(-1) - s_b.mean(-1)) / pooled.clamp_min(1e-12).sqrt()


def auc(s_a: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
    """Share of pairs with ``s_a > s_b`` (ties count half): ``[W, Na]``, ``[W, Nb]`` -> ``[W]``."""
    diff = s_a[:, :, None] - s_b[:, None, :]  # [W, Na, Nb]
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean((1, 2))


def bootstrap_interval(scores_a: torch.Tensor, scores_b: torch.Tensor, num_samples: int, confidence: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval of the separation, resampling prompts and images: ``[W, P, N*]`` -> ``[W]``, ``[W]``."""
    _, p, na = scores_a.shape
    nb = scores_b.shape[-1]
    stats = []
    for _ in range(num_samples):
        ip = torch.randint(p, (p,), generator=generator)
        ia, ib = torch.randint(na, (na,), generator=generator), torch.randint(nb, (nb,), generator=generator)
        s_a = scores_a[:, ip][:, :, ia].mean(1)  # [W, Na]
        s_b = scores_b[:, ip][:, :, ib].mean(1)  # [W, Nb]
        stats.append(separation(s_a, s_b))
    stacked = torch.stack(stats, 1)  # [W, S]
    tail = (1.0 - confidence) / 2
    return stacked.quantile(tail, dim=1), stacked.quantile(1.0 - tail, dim=1)


def find_control_words(reward, images_a: torch.Tensor, images_b: torch.Tensor, prompts: Sequence[str],
                       candidates: Sequence[str], *, num_samples: int = 500, confidence: float = 0.9,
                       seed: int = 0, batch_size: int = 32) -> list[WordScore]:
    """Rank ``candidates`` by how strongly their text direction separates ``images_a`` from ``images_b``.

    ``images_*``: ``[N, 3, H, W]`` in ``[0, 1]``. Returns one :class:`WordScore` per distinct
    candidate, best (largest separation) first; ``low``/``high`` is the ``confidence`` bootstrap
    interval over ``num_samples`` resamples (seeded by ``seed``).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be between 0 and 1 (e.g. 0.9)")
    words = check_inputs(images_a, images_b, prompts, candidates)
    scores_a = direction_scores(reward, images_a, prompts, words, batch_size)  # [W, P, Na]
    scores_b = direction_scores(reward, images_b, prompts, words, batch_size)  # [W, P, Nb]
    s_a, s_b = scores_a.mean(1), scores_b.mean(1)  # [W, N*]
    sep = separation(s_a, s_b)
    low, high = bootstrap_interval(scores_a, scores_b, num_samples, confidence,
                                   torch.Generator().manual_seed(int(seed)))
    areas = auc(s_a, s_b)
    order = sorted(range(len(words)), key=lambda i: -float(sep[i]))
    return [WordScore(rank=r + 1, word=words[i], separation=float(sep[i]), low=float(low[i]), high=float(high[i]),
                      auc=float(areas[i]), mean_a=float(s_a[i].mean()), mean_b=float(s_b[i].mean()))
            for r, i in enumerate(order)]
