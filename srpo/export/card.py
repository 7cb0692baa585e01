"""The model card (``README.md``) that goes with every export.

Every value that comes from a config, a metric name or a store (prompts, descriptions, paths) is
untrusted text: it is escaped for Markdown and HTML, so a crafted name cannot add links, images,
HTML or table cells to the card.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<])")


def md(value: Any) -> str:
    """``value`` as inert Markdown text on one line (HTML-escaped, Markdown punctuation backslashed)."""
    text = " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=True))


@dataclass
class CardInfo:
    model: str  # the ZenML Model and version, e.g. "srpo-flux-hps version 12"
    base_model: str
    family: str
    licence: Optional[str]
    method: str
    steps: int
    finetune: str
    config: dict = field(default_factory=dict)  # the training config (JSON-able)
    evaluation: dict = field(default_factory=dict)  # {"means": {model: {metric: x}}, "deltas": {name: x}}
    guard: Optional[dict] = None  # {"stopped": ..., "selected_update": ..., "published_update": ...}
    promotion: Optional[dict] = None  # {"stage": ..., "reason": ...}
    lineage_command: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file -> what it is


def model_card(info: CardInfo) -> str:
    lines = [f"# {md(info.model)}", "",
             f"A {md(info.family)} transformer tuned with {md(info.method)} ({md(info.finetune)}, "
             f"{int(info.steps)} updates) by the srpo pipeline.", "",
             "## Base model", "", f"- base model: {md(info.base_model)}",
             f"- licence: {md(info.licence) if info.licence else 'see the base model (the tuned weights inherit its licence)'}",
             "", "## Files", ""]
    lines += [f"- `{md(name)}`: {md(what)}" for name, what in sorted(info.files.items())]
    lines += ["", "## Evaluation (held-out prompts)", ""]
    means = info.evaluation.get("means") or {}
    metrics = sorted({m for by in means.values() for m in by})
    if metrics:
        lines += ["| model | " + " | ".join(md(m) for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for model, by in sorted(means.items()):
            lines.append(f"| {md(model)} | " + " | ".join(_num(by.get(m)) for m in metrics) + " |")
    else:
        lines.append("No evaluation was recorded for this version.")
    for name, value in sorted((info.evaluation.get("deltas") or {}).items()):
        lines.append(f"- {md(name)}: {_num(value)}")
    lines += ["", "## Guard and promotion", ""]
    if info.guard:
        lines += [f"- {md(k)}: {md(v)}" for k, v in sorted(info.guard.items())]
    else:
        lines.append("- no guard ran: the last update's weights were published")
    if info.promotion:
        lines += [f"- promotion {md(k)}: {md(v)}" for k, v in sorted(info.promotion.items())]
    lines += ["", "## Training config", "", "```json",
              html.escape(json.dumps(info.config, indent=1, sort_keys=True, default=str)).replace("```", "`\u200b``"),
              "```", "", "## Lineage", "", "```", info.lineage_command.replace("`", ""), "```", ""]
    return "\n".join(lines)


def _num(value) -> str:
    return "" if value is None else f"{float(value):.4f}"


def card_info(model: str, version: str, tuned_folder, policy: dict, train: dict, evaluation: Optional[dict] = None,
              promotion: Optional[dict] = None, licence: Optional[str] = None) -> CardInfo:
    """A :class:`CardInfo` from what a run left: the tuned folder's ``training_log.json`` and the run's configs."""
    from pathlib import Path

    log_path = Path(tuned_folder) / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    guard = log.get("guard")
    guard_info = None if guard is None else {"stopped": guard.get("stopped") or "no",
                                             "selected_update": guard.get("selected_update"),
                                             "published_update": log.get("published_update")}
    return CardInfo(model=f"{model} version {version}", base_model=str(policy.get("pretrained")),
                    family=str(policy.get("family") or "from the base model's model_index.json"), licence=licence,
                    method=str(train.get("method", "srpo")), steps=len(log.get("history", [])) or int(train.get("steps", 0)),
                    finetune=str(train.get("finetune", "lora")), config={"policy": policy, "train": train},
                    evaluation=evaluation or {}, guard=guard_info, promotion=promotion,
                    lineage_command=f"python -m ops.lineage {model} {version}")
