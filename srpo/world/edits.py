"""The shapes world's edit task: instructions that change one attribute of a drawn scene, and their grading.

An edit names one attribute of the scene and the value it should take; everything else should
stay as it was. Instructions are written from the world's own vocabulary::

    fg          "make the circle red"          (the foreground colour; the shape is named)
    bg          "make the background blue"
    brightness  "make it brighter" / "make it darker"
    saturation  "make it more vivid" / "make it more muted"
    shape       "turn the circle into a square"

:func:`draw_edits` draws (source, instruction, target) triples: the target is the source's scene
with that one attribute changed (same position, size, hue jitter; a brightness or saturation edit
moves both colours to the same relative place in the other class's range), so it is the exact
answer. :func:`grade_edits` reads both images with the pixel grader (:mod:`srpo.world.grader`):

- ``done``: the named attribute reads as the instruction's value in the edited image;
- ``kept``: the share of the four unnamed attributes that read the same as in the source; the shape
  counts as kept when the edited foreground covers the source's (IoU >= :data:`SHAPE_KEPT_IOU`).

Why the shape is kept by its outline and not by the grader's class reading: on the VAE's 8x8 blocks
that reading (the share of the bounding box the foreground fills) hangs on the few blended edge
blocks, so noise of 0.01 per block flips it on 11 % of sources and 0.02 on 19 %: a near-exact copy
would read as a changed shape. The outline's overlap is stable to that (>= 98 % at 0.02) and stricter
in what it asks (the same place and size, not only the same class).

Compare an edit model's output with the source *as the model's VAE returns it* (for the world's
8x8-block VAE, :func:`srpo.world.reward.blocks` of it): the grader then judges the edit, not the
VAE. Shape edits are drawn only when asked (:data:`DEFAULT_EDITS` leaves them out): the fixed VAE's
8x8 pixel art shows a triangle the grader reads as one about a third of the time, so "done" on a
shape edit would measure the VAE. Plain tensor code over images and strings (the score-only edit
judge, :func:`edit_score`, sits under the rewards).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from srpo.io import atomic_directory
from srpo.world.grader import Grades, grade
from srpo.world.scoring import attribute_margin
from srpo.world.shapes import BINARY_ATTRIBUTES, COLOUR_NAMES, COLOURS, SHAPES, Scenes, WorldSpec, render, sample_scenes

#: Every attribute an instruction can change, and those drawn by default (see the module docstring).
EDIT_ATTRIBUTES: tuple[str, ...] = ("fg", "bg", "brightness", "saturation", "shape")
DEFAULT_EDITS: tuple[str, ...] = ("fg", "bg", "brightness", "saturation")
#: The comparative words of the binary attributes: (towards False, towards True).
COMPARATIVES: dict[str, tuple[str, str]] = {"brightness": ("darker", "brighter"),
                                            "saturation": ("more muted", "more vivid")}
#: Words the instructions add to the captions' (for tokenizer vocabularies).
EDIT_WORDS: tuple[str, ...] = ("make", "the", "it", "turn", "into", "darker", "brighter", "more")


#: A shape counts as kept when the edited image's foreground covers the source's with this IoU (see the
#: module docstring): drawn targets of every edit clear it (>= 0.71), a copy with 0.02 noise per 8x8 block
#: does 98 % of the time, another scene's shape 19 % of the time.
SHAPE_KEPT_IOU = 0.7


@dataclass(frozen=True)
class Edit:
    """One instruction's meaning: the attribute it changes and the value it asks for.

    ``value``: a colour index (``fg``, ``bg``), a shape index (``shape``) or a bool (binary:
    True = bright / vivid).
    """

    attribute: str
    value: int | bool


def instruction(edit: Edit, shape: int) -> str:
    """The instruction text of ``edit`` for a source whose shape index is ``shape``."""
    if edit.attribute == "fg":
        return f"make the {SHAPES[shape]} {COLOUR_NAMES[int(edit.value)]}"
    if edit.attribute == "bg":
        return f"make the background {COLOUR_NAMES[int(edit.value)]}"
    if edit.attribute == "shape":
        return f"turn the {SHAPES[shape]} into a {SHAPES[int(edit.value)]}"
    if edit.attribute in COMPARATIVES:
        return f"make it {COMPARATIVES[edit.attribute][int(bool(edit.value))]}"
    raise ValueError(f"edit attribute {edit.attribute!r}: choose one of {', '.join(EDIT_ATTRIBUTES)}")


_COLOUR = "|".join(COLOUR_NAMES)
_SHAPE = "|".join(SHAPES)
_PATTERNS = [
    ("bg", re.compile(rf"make the background ({_COLOUR})")),
    ("fg", re.compile(rf"make the (?:{_SHAPE}) ({_COLOUR})")),
    ("shape", re.compile(rf"turn the (?:{_SHAPE}) into a ({_SHAPE})")),
    *[(a, re.compile(rf"make it ({'|'.join(words)})")) for a, words in COMPARATIVES.items()],
]


def parse_instruction(text: str) -> Edit:
    """The :class:`Edit` an instruction of this world asks for; ``ValueError`` for any other text."""
    clean = " ".join(text.strip().lower().split())
    for attribute, pattern in _PATTERNS:
        match = pattern.fullmatch(clean)
        if match:
            word = match.group(1)
            if attribute in COMPARATIVES:
                return Edit(attribute, COMPARATIVES[attribute].index(word) == 1)
            return Edit(attribute, (SHAPES if attribute == "shape" else COLOUR_NAMES).index(word))
    raise ValueError(f"instruction {text!r} is not a shapes-world edit: write e.g. 'make the circle red', "
                     "'make the background blue', 'make it brighter', 'make it more muted' or "
                     "'turn the circle into a square'")


def all_instructions(attributes: Sequence[str] = EDIT_ATTRIBUTES) -> list[str]:
    """Every instruction the world writes for ``attributes``, in a fixed order (for prompt caches)."""
    out = []
    for attribute in attributes:
        if attribute in COMPARATIVES:
            out += [instruction(Edit(attribute, v), 0) for v in (False, True)]
        elif attribute == "bg":
            out += [instruction(Edit("bg", c), 0) for c in range(len(COLOUR_NAMES))]
        else:
            n = len(SHAPES) if attribute == "shape" else len(COLOUR_NAMES)
            out += [instruction(Edit(attribute, v), s) for s in range(len(SHAPES)) for v in range(n)
                    if attribute != "shape" or v != s]
    return out


def check_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    """``attributes`` when each is an edit attribute and there is at least one; a clear error otherwise."""
    bad = [a for a in attributes if a not in EDIT_ATTRIBUTES]
    if bad or not attributes:
        raise ValueError(f"edit attributes {list(attributes)!r}: choose among {', '.join(EDIT_ATTRIBUTES)} "
                         "(at least one)")
    return tuple(attributes)


def _other(current: torch.Tensor, n: int, g: torch.Generator, avoid: torch.Tensor | None = None) -> torch.Tensor:
    """A random index in [0, n) per row, never ``current`` (nor ``avoid``, when given)."""
    out = (current + 1 + torch.randint(n - 1, current.shape, generator=g)) % n
    if avoid is not None:  # redraw the clashes among the n - 2 values left
        for i in torch.nonzero(out == avoid).flatten().tolist():
            options = [v for v in range(n) if v not in (int(current[i]), int(avoid[i]))]
            out[i] = options[int(torch.randint(len(options), (), generator=g))]
    return out


def _move_class(levels: torch.Tensor, flag: torch.Tensor, low: tuple[float, float], high: tuple[float, float]
                ) -> torch.Tensor:
    """``levels`` [N, 2] of class ``flag`` moved to the same relative place in the other class's range."""
    lo_from = torch.where(flag, torch.tensor(high[0]), torch.tensor(low[0]))[:, None]
    hi_from = torch.where(flag, torch.tensor(high[1]), torch.tensor(low[1]))[:, None]
    lo_to = torch.where(flag, torch.tensor(low[0]), torch.tensor(high[0]))[:, None]
    hi_to = torch.where(flag, torch.tensor(low[1]), torch.tensor(high[1]))[:, None]
    return lo_to + (levels - lo_from) / (hi_from - lo_from) * (hi_to - lo_to)


def apply_edits(scenes: Scenes, edits: Sequence[Edit], spec: WorldSpec = WorldSpec()) -> Scenes:
    """The scenes with each one's edit applied (everything the edit does not name stays as it was)."""
    out = Scenes(**{k: v.clone() for k, v in scenes.__dict__.items()})  # subset(slice) would share storage
    hues = torch.tensor(list(COLOURS.values()))
    for i, edit in enumerate(edits):
        if edit.attribute in ("fg", "bg"):
            col = 0 if edit.attribute == "fg" else 1
            old = int(getattr(scenes, edit.attribute)[i])
            getattr(out, edit.attribute)[i] = int(edit.value)
            out.hue[i, col] = (scenes.hue[i, col] - hues[old] + hues[int(edit.value)]) % 360.0  # same jitter
        elif edit.attribute == "shape":
            out.shape[i] = int(edit.value)
        elif edit.attribute in BINARY_ATTRIBUTES:
            flag, field = ("bright", "value") if edit.attribute == "brightness" else ("vivid", "saturation")
            low, high = ((spec.dark_value, spec.bright_value) if edit.attribute == "brightness"
                         else (spec.muted_saturation, spec.vivid_saturation))
            was = getattr(scenes, flag)[i:i + 1]
            if bool(was) != bool(edit.value):
                getattr(out, field)[i] = _move_class(getattr(scenes, field)[i:i + 1], was, low, high)[0]
                getattr(out, flag)[i] = bool(edit.value)
        else:
            raise ValueError(f"edit attribute {edit.attribute!r}: choose one of {', '.join(EDIT_ATTRIBUTES)}")
    return out


def sample_edits(scenes: Scenes, seed: int, attributes: Sequence[str] = DEFAULT_EDITS) -> list[Edit]:
    """One edit per scene: a uniformly drawn attribute of ``attributes`` and a value the scene does not have.

    Colours never become the other colour of the scene (a red circle on red would have no shape).
    """
    attributes = check_attributes(attributes)
    g = torch.Generator().manual_seed(int(seed))
    n, ncol = len(scenes), len(COLOUR_NAMES)
    which = torch.randint(len(attributes), (n,), generator=g)
    new_fg = _other(scenes.fg, ncol, g, avoid=scenes.bg)
    new_bg = _other(scenes.bg, ncol, g, avoid=scenes.fg)
    new_shape = _other(scenes.shape, len(SHAPES), g)
    values = {"fg": new_fg.tolist(), "bg": new_bg.tolist(), "shape": new_shape.tolist(),
              "brightness": (~scenes.bright).tolist(), "saturation": (~scenes.vivid).tolist()}
    return [Edit(attributes[int(k)], values[attributes[int(k)]][i]) for i, k in enumerate(which)]


def target_texts(targets: Scenes, edits: Sequence[Edit]) -> list[str]:
    """What each edit's result shows, in the captions' words (the text an edit reward compares with).

    The target's base prompt; a brightness or saturation edit also prefixes the word it asks for, in
    SRP's control-word format (``"bright. a red circle on a blue background"``).
    """
    out = []
    for prompt, edit in zip(targets.base_prompts(), edits):
        word = BINARY_ATTRIBUTES[edit.attribute][int(bool(edit.value))] if edit.attribute in BINARY_ATTRIBUTES else ""
        out.append(f"{word}. {prompt}" if word else prompt)
    return out


@dataclass
class EditSet:
    """Drawn edit triples: ``sources`` and ``targets`` [N, 3, S, S] in [0, 1], one instruction each, and
    the source captions and target texts (:func:`target_texts`)."""

    sources: torch.Tensor
    instructions: list[str]
    targets: torch.Tensor
    edits: list[Edit]
    source_scenes: Scenes
    target_scenes: Scenes

    @property
    def source_texts(self) -> list[str]:
        return self.source_scenes.base_prompts()

    @property
    def target_texts(self) -> list[str]:
        return target_texts(self.target_scenes, self.edits)

    def __len__(self) -> int:
        return len(self.instructions)


def draw_edits(n: int, seed: int, spec: WorldSpec = WorldSpec(), attributes: Sequence[str] = DEFAULT_EDITS
               ) -> EditSet:
    """``n`` (source, instruction, target) triples from ``seed``."""
    scenes = sample_scenes(n, seed, spec)
    edits = sample_edits(scenes, seed + 1, attributes)
    targets = apply_edits(scenes, edits, spec)
    texts = [instruction(e, int(s)) for e, s in zip(edits, scenes.shape)]
    return EditSet(render(scenes, spec), texts, render(targets, spec), edits, scenes, targets)


def write_edit_folder(triples: EditSet, folder: str | Path) -> Path:
    """Write ``triples`` as an edit-data folder (:mod:`srpo.edit_data`): PNG sources and targets and a
    ``metadata.jsonl`` of ``{"file_name", "instruction", "target", "target_text", "source_text"}`` lines
    (the last two: what an edit reward's text terms compare with). Atomic: all of it or nothing."""
    from PIL import Image

    def png(image: torch.Tensor, path: Path) -> None:
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [H, W, 3]
        Image.fromarray(pixels).save(path)

    lines = []
    with atomic_directory(Path(folder)) as tmp:
        for i, (text, target_text, source_text) in enumerate(zip(triples.instructions, triples.target_texts,
                                                                 triples.source_texts)):
            png(triples.sources[i], tmp / f"{i:05d}.png")
            png(triples.targets[i], tmp / f"{i:05d}_target.png")
            lines.append(json.dumps({"file_name": f"{i:05d}.png", "instruction": text, "target": f"{i:05d}_target.png",
                                     "target_text": target_text, "source_text": source_text}))
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return Path(folder)


def _readings(g: Grades) -> dict[str, torch.Tensor]:
    """Each edit attribute's reading per image ([N] long or bool)."""
    return {"fg": g.fg, "bg": g.bg, "shape": g.shape, "brightness": g.bright, "saturation": g.vivid}


def shape_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union [N] of two foreground masks [N, H, W] (both empty: 1, nothing moved)."""
    union = (a | b).sum((1, 2)).float()
    return torch.where(union > 0, (a & b).sum((1, 2)).float() / union.clamp(min=1), torch.ones_like(union))


def _compare(edited: torch.Tensor, sources: torch.Tensor, instructions: Sequence[str], spec: WorldSpec
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Grades, list[Edit]]:
    """(done [N] bool, same [N, A] bool: each attribute reads as in the source, named [N, A] bool,
    the edited images' grades, the edits)."""
    if edited.shape[0] != sources.shape[0] or edited.shape[0] != len(instructions):
        raise ValueError(f"{edited.shape[0]} edited images, {sources.shape[0]} sources and {len(instructions)} "
                         "instructions: give one source and one instruction per edited image")
    edits = [parse_instruction(t) for t in instructions]
    graded, source_grades = grade(edited, spec), grade(sources, spec)
    now, before = _readings(graded), _readings(source_grades)
    done = torch.tensor([bool(now[e.attribute][i] == int(e.value)) for i, e in enumerate(edits)])
    now["shape"] = shape_overlap(graded.foreground, source_grades.foreground) >= SHAPE_KEPT_IOU  # outline kept
    before["shape"] = torch.ones_like(now["shape"])
    same = torch.stack([now[a] == before[a] for a in EDIT_ATTRIBUTES], 1)  # [N, A]
    named = torch.tensor([[a == e.attribute for a in EDIT_ATTRIBUTES] for e in edits])  # [N, A]
    return done, same, named, graded, edits


def _kept(same: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
    return (same & ~named).float().sum(1) / (len(EDIT_ATTRIBUTES) - 1)  # [N]


def grade_edits(edited: torch.Tensor, sources: torch.Tensor, instructions: Sequence[str],
                spec: WorldSpec = WorldSpec()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(done [N] bool, kept [N] float)`` of ``edited`` against ``sources`` (both [N,3,H,W] in [0, 1]).

    ``done``: the instruction's attribute reads as its value. ``kept``: the share of the other four
    attributes whose reading equals the source's.
    """
    done, same, named, _, _ = _compare(edited, sources, instructions, spec)
    return done, _kept(same, named)


def kept_by_attribute(edited: torch.Tensor, sources: torch.Tensor, instructions: Sequence[str],
                      spec: WorldSpec = WorldSpec()) -> dict[str, float]:
    """For each attribute, the share of the edits not naming it that kept it (where an edit model drifts)."""
    _, same, named, _, _ = _compare(edited, sources, instructions, spec)
    return {a: same[~named[:, j], j].float().mean().item() for j, a in enumerate(EDIT_ATTRIBUTES)
            if bool((~named[:, j]).any())}


def edit_summary(done: torch.Tensor, kept: torch.Tensor, instructions: Sequence[str]) -> dict:
    """Shares over a set: ``done``, ``kept``, ``done`` per attribute and the count."""
    attrs = [parse_instruction(t).attribute for t in instructions]
    per = {a: done[torch.tensor([x == a for x in attrs])].float().mean().item() for a in dict.fromkeys(attrs)}
    return {"done": done.float().mean().item(), "kept": kept.mean().item(), "done_by_attribute": per,
            "n": len(instructions)}


def edit_score(images: torch.Tensor, prompts: list[str], sources: torch.Tensor | None = None) -> torch.Tensor:
    """The world's grader as a score-only edit judge: ``done + kept`` per image, plus, for a brightness or
    saturation edit, how far the reading is past the grader's cut in the asked direction
    (:func:`srpo.world.scoring.attribute_margin`, about +-0.5), so that a group's members that agree
    on done and kept still differ (informative group advantages, as the text-to-image scores do).

    ``prompts`` are the instructions; ``sources`` [B,3,H,W] the source images (as the policy's VAE
    returns them, see the module docstring). Registered as ``reward.function: shapes-edit``.
    """
    if sources is None:
        raise ValueError("the shapes-edit score needs the source images: call score(images, instructions, "
                         "sources=...) with one source per edited image")
    done, same, named, graded, edits = _compare(images, sources.to(images.device).float(), prompts, WorldSpec())
    margin = torch.zeros(len(edits))
    for attribute in COMPARATIVES:
        rows = [i for i, e in enumerate(edits) if e.attribute == attribute]
        if rows:
            towards = torch.tensor([bool(edits[i].value) for i in rows])
            both = torch.stack([attribute_margin(graded, attribute, flag) for flag in (False, True)], 1)  # [N, 2]
            margin[rows] = both[rows].gather(1, towards.long()[:, None])[:, 0]
    return done.float() + _kept(same, named) + margin
