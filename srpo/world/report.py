"""Before/after measurements of an SRPO run on the shapes world: the demo's table, grids and curves.

The steered attribute is read from the run's control words (``positive_words: [bright]`` steers
brightness towards "bright"); the other binary attribute (saturation) is what a reward with a
planted bias would drag along, and colours and shape are the fidelity attributes: the prompt
names them, so they should stay right while the steered attribute moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from pydantic import Field

from srpo.config import StrictModel
from srpo.rewards.scores import is_score_only
from srpo.srp import with_control
from srpo.world.generator import sample_images
from srpo.world.grader import fidelity, grade
from srpo.world.shapes import BINARY_ATTRIBUTES, all_base_prompts


class WorldReportConfig(StrictModel):
    """What the world report measures. The steered attribute comes from the run's positive words."""

    samples_per_prompt: int = Field(4, ge=1, description="samples per base prompt (60 prompts), same seeds before/after")
    num_steps: int = Field(25, ge=1)
    guidance: float = Field(3.5, ge=0)
    seed: int = 2024
    grid_columns: int = Field(10, ge=1)
    target_movement: float = 0.30  # the targets, reported next to the numbers
    max_fidelity_drop: float = 0.10


@dataclass
class Steering:
    """The binary attribute a run steers and the value it steers towards."""

    attribute: str  # "brightness" | "saturation"
    towards: bool  # True: bright / vivid
    word: str

    @property
    def flag_name(self) -> str:
        return BINARY_ATTRIBUTES[self.attribute][int(self.towards)]


def steering_from_words(positive_words: Sequence[str]) -> Steering:
    """The world attribute named by the first positive control word that is a world word."""
    for word in positive_words:
        for attribute, pair in BINARY_ATTRIBUTES.items():
            if word.strip().lower() in pair:
                return Steering(attribute, pair.index(word.strip().lower()) == 1, word)
    raise ValueError(f"none of the positive control words {list(positive_words)} is a shapes-world attribute word "
                     f"({', '.join(w for p in BINARY_ATTRIBUTES.values() for w in p)}): the world report needs one")


def eval_prompts(cfg: WorldReportConfig) -> tuple[list[str], list[int]]:
    """Every base prompt ``samples_per_prompt`` times, with a fixed seed each."""
    prompts = [p for p in all_base_prompts() for _ in range(cfg.samples_per_prompt)]
    return prompts, [cfg.seed + 104729 * i for i in range(len(prompts))]


@torch.no_grad()
def measure(images: torch.Tensor, prompts: list[str], steering: Steering, reward=None,
            negative_word: str | None = None) -> dict:
    """Attribute shares, fidelity and reward scores of ``images`` [N,3,H,W] generated for ``prompts``."""
    graded = grade(images)
    fid = fidelity(graded, prompts)
    out = {
        "steered_share": (graded.flag(steering.attribute) == steering.towards).float().mean().item(),
        "bright_share": graded.bright.float().mean().item(),
        "vivid_share": graded.vivid.float().mean().item(),
        "mean_value": graded.value.mean().item(),
        "mean_saturation": graded.saturation.mean().item(),
        "fg": fid["fg"], "bg": fid["bg"], "colours": fid["colours"], "shape": fid["shape"],
    }
    if reward is not None and is_score_only(reward):  # a score-only reward (grpo): its score, no features
        out["reward"] = reward.score(images.to(reward.device), prompts).float().mean().item()
    elif reward is not None:
        img = reward.image_features(images.to(reward.device))
        plain = reward.text_features(prompts)
        out["reward"] = (reward.scale * (img * plain).sum(-1)).mean().item()
        pos = reward.text_features(with_control(steering.word, prompts))
        out["reward_positive"] = (reward.scale * (img * pos).sum(-1)).mean().item()
        if negative_word:
            neg = reward.text_features(with_control(negative_word, prompts))
            out["reward_relative"] = (reward.scale * (img * (pos - neg)).sum(-1)).mean().item()
    return out


def compare(before: dict, after: dict, cfg: WorldReportConfig) -> dict:
    """Before/after/delta per measure, and whether the issue's targets were reached."""
    rows = {k: {"before": before[k], "after": after[k], "delta": after[k] - before[k]} for k in before if k in after}
    moved = rows["steered_share"]["delta"]
    drop = -rows["colours"]["delta"]
    return {"rows": rows, "movement": moved, "colour_drop": drop,
            "movement_reached": moved >= cfg.target_movement, "fidelity_kept": drop <= cfg.max_fidelity_drop}


LABELS = {
    "steered_share": "steered: share {flag}", "bright_share": "share bright", "vivid_share": "share vivid",
    "fg": "fidelity: foreground colour", "bg": "fidelity: background colour", "colours": "fidelity: both colours",
    "shape": "fidelity: shape", "mean_value": "mean HSV value", "mean_saturation": "mean HSV saturation",
    "reward": "reward (plain prompt)", "reward_positive": "reward ('{word}. ' + prompt)",
    "reward_relative": "SRP reward (pos - neg)",
}
PERCENT = {"steered_share", "bright_share", "vivid_share", "fg", "bg", "colours", "shape"}


def table(result: dict, steering: Steering, num_images: int) -> str:
    """The demo's plain-text table."""
    lines = [f"shapes world, {num_images} images (60 prompts without attribute words, fixed seeds): "
             f"steering {steering.attribute} towards '{steering.flag_name}'",
             f"{'measure':<34}{'before':>10}{'after':>10}{'delta':>10}"]
    duplicate = {"brightness": "bright_share", "saturation": "vivid_share"}[steering.attribute]
    for key, row in result["rows"].items():
        if key == duplicate and steering.towards:
            continue  # the same number as the steered share
        label = LABELS.get(key, key).format(flag=steering.flag_name, word=steering.word)
        if key in PERCENT:
            vals = f"{100 * row['before']:>9.1f}%{100 * row['after']:>9.1f}%{100 * row['delta']:>+9.1f}pp"
        else:
            vals = f"{row['before']:>10.4f}{row['after']:>10.4f}{row['delta']:>+10.4f}"
        lines.append(f"{label:<34}{vals}")
    lines.append(f"target: steered share +30pp or more -> {'reached' if result['movement_reached'] else 'NOT reached'} "
                 f"({100 * result['movement']:+.1f}pp); colour fidelity drop at most 10pp -> "
                 f"{'kept' if result['fidelity_kept'] else 'NOT kept'} ({100 * result['colour_drop']:+.1f}pp drop)")
    return "\n".join(lines)


def html_table(text: str) -> str:
    import html

    return f"<pre style='font-family:monospace'>{html.escape(text)}</pre>"


@torch.no_grad()
def generate(policy, prompts: list[str], seeds: list[int], cfg: WorldReportConfig) -> torch.Tensor:
    return sample_images(policy, prompts, seeds, cfg.num_steps, guidance=cfg.guidance)


#: The guard metric (``world.<key>``) that holds the share of each steerable attribute's "on" value.
SHARE_METRICS = {"brightness": "world.bright_share", "saturation": "world.vivid_share"}


def guard_points(guard: Optional[dict], steering: Steering) -> Optional[list[dict]]:
    """The curves' points from the training's own guard checks (``training_log.json``'s ``guard``).

    Each check measured the world's shares on the guard's held-out images during the run; None when
    the run had no guard, or its guard did not measure the steered attribute's share and the colours.
    """
    share = SHARE_METRICS[steering.attribute]
    if not guard or not guard["checks"] or not {share, "world.colours"} <= set(guard["checks"][0]["values"]):
        return None
    points = []
    for check in guard["checks"]:
        values = check["values"]
        on = values[share]
        points.append({"step": check["step"], "steered_share": on if steering.towards else 1.0 - on,
                       "colours": values["world.colours"], "vivid_share": values.get("world.vivid_share")})
    return points


def guard_line(guard: dict, updates: int) -> str:
    """One line of the table: which update the guard published, and whether it stopped the run."""
    selected = guard["selected_update"]
    published = f"update {selected} of {updates}" if selected is not None else f"the final weights ({updates} updates)"
    return (f"guard: {len(guard['checks'])} checks, published {published}; "
            + (f"stopped at {guard['stopped']}" if guard["stopped"] else "no stop rule fired"))


def curves_figure(history: list[dict], points: Optional[list[dict]], steering: Steering):
    """Reward per update (training log) and, from the guard's checks, the steered share and colour fidelity."""
    from srpo.world.plots import line_chart, side_by_side

    steps = [h["step"] + 1 for h in history]
    charts = [line_chart({"denoise-branch reward": (steps, [h["reward"] for h in history])},
                         "training reward per update")]
    if points:
        xs = [p["step"] for p in points]
        charts.append(line_chart({f"share {steering.flag_name}": (xs, [p["steered_share"] for p in points]),
                                  "both colours right": (xs, [p["colours"] for p in points]),
                                  **({"share vivid": (xs, [p["vivid_share"] for p in points])}
                                     if points[0]["vivid_share"] is not None else {})},
                                 "attribute shares (guard checks during training)", ylim=(0.0, 1.0)))
    return side_by_side(charts)


def grid_figure(before: torch.Tensor, after: torch.Tensor, prompts: list[str], columns: int, samples_per_prompt: int):
    """Same prompts and seeds, before (top) and after (bottom) training."""
    from srpo.world.plots import image_grid

    step = max(1, len(prompts) // columns)
    idx = list(range(0, len(prompts), step))[:columns]
    return image_grid([before[idx], after[idx]], ["before", "after"], scale=2,
                      title="same prompt and seed per column: " + "; ".join(f"{k + 1}: {prompts[i]}"
                                                                           for k, i in enumerate(idx[:2])) + " ...")


def run_world_report(load_base, load_tuned, load_reward, train, cfg: WorldReportConfig, history: list[dict],
                     guard: Optional[dict] = None) -> dict:
    """Measure base and tuned models on the world; the curves come from the run's guard checks (``guard``)."""
    reward = load_reward()
    steering = steering_from_words(train.positive_words)
    negative = train.negative_words[0] if train.negative_words else None
    prompts, seeds = eval_prompts(cfg)
    base = load_base()
    before_images = generate(base, prompts, seeds, cfg)
    before = measure(before_images, prompts, steering, reward, negative)
    del base
    tuned = load_tuned()
    after_images = generate(tuned, prompts, seeds, cfg)
    after = measure(after_images, prompts, steering, reward, negative)
    del tuned
    comparison = compare(before, after, cfg)
    points = guard_points(guard, steering)
    text = table(comparison, steering, len(prompts))
    if guard:
        text += "\n" + guard_line(guard, len(history))
    report = {"steering": {"attribute": steering.attribute, "towards": steering.flag_name, "word": steering.word,
                           "negative_word": negative},
              "num_images": len(prompts), "before": before, "after": after, "comparison": comparison,
              "table": text, "curve": points,
              "guard": {"selected_update": guard["selected_update"], "stopped": guard["stopped"]} if guard else None,
              "config": cfg.model_dump(mode="json")}
    return {"report": report, "comparison": comparison, "html": html_table(text),
            "grid": grid_figure(before_images, after_images, prompts, cfg.grid_columns, cfg.samples_per_prompt),
            "curves": curves_figure(history, points, steering)}
