"""Evaluating an edit model: every model edits the same held-out (source, instruction) pairs from the same noise.

What an edit run's ``evaluate_edits`` step runs (``evaluation.edits``, :class:`EditEvalConfig`). For each
model, each held-out pair's source is edited from the seeded noise of its index (the paper's protocol, as
:mod:`srpo.evaluation.runner`), rounded to 8 bits and saved (``images/<model>/<index>.png``; the sources
under ``sources/``), then scored:

- every metric and the training reward(s) against the pair's *target text* (what the edited image should
  show: the data's ``target_text``, else the instruction), as text-to-image images are scored;
- with a multi-reward (``rewards:``), each term as it trains: ``rewards.<term>`` (``against: source``
  and ``direction`` terms with the source and its caption; text terms in their plain form, without
  control words) and their weighted sum ``rewards``;
- with ``grader: shapes``, the shapes world's pixel grader: ``done`` (the instruction's attribute
  reads as asked) and ``kept`` (the share of the unnamed attributes read as in the source), against
  the source as the model's VAE returns it (:mod:`srpo.world.edits`).

The scores go through the suite's :func:`~srpo.evaluation.results.write_results` (means, bootstrap
intervals, deltas against the baseline, the HTML grid), so promotion, export and the human-eval pages
read an edit run as any other; ``edit_report.json`` adds the grader's shares per model, per attribute
(done by the attribute the edit names, kept by each unnamed attribute) and their change from the baseline.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from srpo.evaluation.artifacts import EvalResults
from srpo.evaluation.config import EditEvalConfig, EvalConfig, EvalReportConfig
from srpo.evaluation.images import save_png
from srpo.evaluation.metrics.base import Metric
from srpo.evaluation.runner import quantize
from srpo.evaluation.scoring import eval_seeds
from srpo.io import atomic_directory, atomic_write_text
from srpo.models.base import Policy
from srpo.noise import prompt_noise

log = logging.getLogger(__name__)

EDIT_REPORT = "edit_report.json"
SOURCES = "sources"


@dataclass
class HeldoutEdits:
    """Held-out pairs at the evaluation size: ``sources`` [N, 3, H, W] in [0, 1], one instruction, target text
    and (or None) source caption each."""

    sources: torch.Tensor
    instructions: list[str]
    texts: list[str]
    source_texts: Optional[list[str]]

    def __len__(self) -> int:
        return len(self.instructions)


def _pair_keys(root: Path, pairs) -> dict[str, int]:
    """``{digest of the source file's bytes + instruction: line}``: what makes two pairs the same edit."""
    keys = {}
    for p in pairs:
        digest = hashlib.sha256((root / p.source).read_bytes()).hexdigest()
        keys[f"{digest}\x00{p.instruction}"] = p.line
    return keys


def load_heldout_edits(cfg: EditEvalConfig, height: int, width: int, num_pairs: Optional[int] = None,
                       train_source: Optional[str] = None) -> HeldoutEdits:
    """``cfg.source``'s pairs (the first ``num_pairs``), checked by :func:`srpo.edit_data.load_edit_pairs`.

    Raises:
        ValueError: a held-out pair is also a training pair of ``train_source`` (same source image bytes and
            instruction), or the folder is the training folder.
    """
    from srpo.edit_data import load_edit_pairs
    from srpo.training.rollouts import load_image

    root, pairs = load_edit_pairs(cfg.source)
    pairs = pairs[:num_pairs] if num_pairs else pairs
    if train_source is not None:
        train_root, train_pairs = load_edit_pairs(train_source)
        if train_root.resolve() == root.resolve():
            raise ValueError(f"evaluation.edits.source {cfg.source!r} is the folder training edits "
                             f"(rollouts.edits {train_source!r}): give a held-out folder, e.g. python -m "
                             "ops.shapes_edits data/edits/shapes_heldout --seed 1")
        seen = _pair_keys(train_root, train_pairs)
        shared = [line for key, line in _pair_keys(root, pairs).items() if key in seen]
        if shared:
            raise ValueError(f"evaluation.edits.source {cfg.source!r}: {len(shared)} held-out pair(s) (metadata.jsonl "
                             f"lines {shared[:5]}) are training pairs of rollouts.edits {train_source!r} (same source "
                             "image and instruction): remove them, or draw the held-out set from another seed")
    sources = torch.stack([load_image(root / p.source, height, width) for p in pairs])  # [N, 3, H, W]
    texts = [p.target_text or p.instruction for p in pairs]
    captions = None if any(p.source_text is None for p in pairs) else [p.source_text for p in pairs]
    return HeldoutEdits(sources, [p.instruction for p in pairs], texts, captions)


@torch.no_grad()
def edit_batch(policy: Policy, sources: torch.Tensor, instructions: list[str], seeds: list[int], gen: EvalConfig,
               height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edited, reference)``, both [B, 3, H, W] in [0, 1] at 8-bit values: the policy's edits of ``sources``
    [B, 3, H, W] from ``seeds``, and the sources through the policy's VAE (what the grader compares with)."""
    eps = prompt_noise(policy, height, width, seeds)  # [B, C, h, w]
    pixels = sources.to(policy.device)
    cond = policy.encode_prompts(instructions, policy.encode_sources(pixels))
    x0 = policy.rollout(cond, eps, gen.num_steps, gen.shift, gen.guidance)
    edited = quantize(policy.decode(x0).float().cpu())
    reference = quantize(policy.decode(policy.encode_images(pixels)).float().cpu())
    return edited, reference


def score_terms(multi, images: torch.Tensor, edits: HeldoutEdits, rows: slice) -> dict[str, torch.Tensor]:
    """Each term of ``multi`` (:class:`~srpo.rewards.combine.MultiReward`) as ``rewards.<name>`` [B] and the
    weighted sum as ``rewards``; text terms in their plain form (the target text, no control words)."""
    from srpo.rewards.combine import term_reward

    out, total = {}, torch.zeros(images.shape[0])
    for term in multi.terms:
        plain = term if term.against != "text" else term.model_copy(update={"form": "plain"})
        device = next(term.reward.parameters()).device
        r = term_reward(plain, images.to(device), edits.texts[rows], sources=edits.sources[rows].to(device),
                        source_prompts=edits.source_texts[rows] if edits.source_texts is not None else None)
        out[f"rewards.{term.name}"] = r.float().cpu()
        total += term.weight * out[f"rewards.{term.name}"]
    out["rewards"] = total
    return out


def check_direction_captions(multi, edits: HeldoutEdits, source: str) -> None:
    """Refuse ``against: direction`` terms when the held-out pairs have no source captions, before generating."""
    direction = [t.name for t in (multi.terms if multi is not None else []) if t.against == "direction"]
    if direction and edits.source_texts is None:
        raise ValueError(f"evaluation.edits.source {source!r}: reward terms {direction} (against: direction) need "
                         "each pair's source caption: add \"source_text\" to every metadata.jsonl line")


def _grade(edited: torch.Tensor, reference: torch.Tensor, instructions: list[str]) -> dict[str, torch.Tensor]:
    from srpo.world.edits import grade_edits

    done, kept = grade_edits(edited, reference, instructions)
    return {"done": done.float(), "kept": kept.float()}


def grader_report(edited: dict[str, torch.Tensor], reference: torch.Tensor, instructions: Sequence[str],
                  baseline: str) -> dict:
    """The shapes grader's shares per model (:func:`srpo.world.edits.edit_summary` plus kept per attribute)
    and each model's change from ``baseline`` (``done``, ``kept``, in shares)."""
    from srpo.world.edits import edit_summary, grade_edits, kept_by_attribute

    models = {}
    for name, images in edited.items():
        done, kept = grade_edits(images, reference, list(instructions))
        models[name] = {**edit_summary(done, kept, list(instructions)),
                        "kept_by_attribute": kept_by_attribute(images, reference, list(instructions))}
    changes = {name: {k: models[name][k] - models[baseline][k] for k in ("done", "kept")}
               for name in models if name != baseline and baseline in models}
    return {"grader": "shapes", "baseline": baseline, "models": models, "change_from_baseline": changes}


def run_edit_evaluation(models: Mapping[str, Callable[[], Policy]], edits: HeldoutEdits, metrics: Mapping[str, Metric],
                        gen: EvalConfig, report: EvalReportConfig, height: int, width: int, out_dir: Path,
                        multi=None, grader: Optional[str] = None) -> tuple[EvalResults, dict]:
    """Edit with every model, score, write an :class:`EvalResults` (plus ``edit_report.json``) in ``out_dir``.

    Returns the results and the edit report (``{}`` without a grader).
    """
    from srpo.evaluation.results import refuse_non_finite, write_results

    if len(edits) == 0:
        raise ValueError("no held-out edits to evaluate on: evaluation.edits.source lists none")
    if not models:
        raise ValueError("no models to evaluate: give at least one")
    if not metrics and multi is None and grader is None:
        raise ValueError("nothing to score the edits with: give a reward, rewards, a metric or evaluation.edits.grader")
    if any(m.external for m in metrics.values()):
        raise ValueError(f"metrics {[k for k, m in metrics.items() if m.external]} run outside this process on "
                         "text-to-image files: an edit evaluation scores in process only; remove them")
    n = len(edits)
    seeds = eval_seeds(range(n), gen)
    items = [{"index": i, "prompt": edits.instructions[i], "category": "all", "seed": seeds[i], "text": edits.texts[i],
              "source": f"{SOURCES}/{i:05d}.png"} for i in range(n)]
    scores: dict[str, dict[str, list[float]]] = {}
    edited_images: dict[str, torch.Tensor] = {}
    reference: Optional[torch.Tensor] = None
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as work:
        layout = EvalResults(work)
        for i in range(n):
            save_png(edits.sources[i], work / SOURCES / f"{i:05d}.png")
        for model_name, load in models.items():
            if "/" in model_name or model_name in ("", ".", ".."):
                raise ValueError(f"model name {model_name!r} cannot be used as a folder name: use letters, digits, "
                                 "- and _")
            policy = load()
            parts: dict[str, list[torch.Tensor]] = {}
            images_all, refs = [], []
            for start in range(0, n, report.batch_size):
                rows = slice(start, min(start + report.batch_size, n))
                images, ref = edit_batch(policy, edits.sources[rows], edits.instructions[rows], seeds[rows], gen,
                                         height, width)
                for j, img in enumerate(images):
                    save_png(img, layout.image_path(model_name, start + j))
                batch = {k: m.score_batched(images, edits.texts[rows]) for k, m in metrics.items()}
                if multi is not None:
                    batch.update(score_terms(multi, images, edits, rows))
                if grader == "shapes":
                    batch.update(_grade(images, ref, edits.instructions[rows]))
                for k, v in batch.items():
                    parts.setdefault(k, []).append(v.float().cpu())
                images_all.append(images)
                refs.append(ref)
                log.info("%s: %d/%d edits made and scored", model_name, rows.stop, n)
            del policy
            gc.collect()
            scores[model_name] = {k: torch.cat(v).tolist() for k, v in parts.items()}
            refuse_non_finite({model_name: scores[model_name]}, items)
            edited_images[model_name] = torch.cat(images_all)
            reference = torch.cat(refs) if reference is None else reference  # the VAE is every model's same
        meta = {"benchmark": "edits", "num_steps": gen.num_steps, "guidance": gen.guidance, "shift": gen.shift,
                "seed": gen.seed, "seed_stride": gen.seed_stride, "height": height, "width": width}
        write_results(work, items, scores, report, meta)
        edit_report = (grader_report(edited_images, reference, edits.instructions, report.baseline)
                       if grader == "shapes" else {})
        if edit_report:
            atomic_write_text(work / EDIT_REPORT, json.dumps(edit_report, indent=1))
    return EvalResults(out_dir), edit_report


def evaluate_edit_suite(out_dir: Path, *, policy, evaluation: EvalConfig, report: EvalReportConfig = EvalReportConfig(),
                        tuned: Optional[str] = None, models=None, reward=None, extra_rewards=None, rewards=None,
                        metrics=None, train_edits: Optional[str] = None) -> tuple[dict, EvalResults, dict]:
    """:func:`srpo.evaluation.suite.evaluate_suite` for an edit model: ``(summary, results, edit_report)``.

    ``rewards``: the run's :class:`~srpo.rewards.config.MultiRewardConfig` (scored per term);
    ``train_edits``: the training pairs' folder, which the held-out pairs may not repeat.
    """
    from srpo.evaluation.suite import build_metrics, build_models, summary_dict
    from srpo.models.families import resolve_device
    from srpo.training.fit import check_inference_fits

    if evaluation.edits is None:
        raise ValueError("evaluation.edits is not set: give the held-out edit folder (evaluation.edits.source)")
    device = str(resolve_device(policy.device))
    check_inference_fits(policy, resolve_device(policy.device), batch=report.batch_size, num_samples=report.batch_size,
                         decode_batch=report.batch_size, step="evaluation",  # before any weight loads
                         scorers=[c for c in (reward, *(extra_rewards or {}).values(), *(metrics or {}).values(),
                                              *(e.reward for e in (rewards.rewards if rewards else []))) if c])
    edits = load_heldout_edits(evaluation.edits, policy.height, policy.width, evaluation.num_prompts, train_edits)
    multi = None
    if rewards is not None:
        from srpo.rewards.combine import load_multi_reward

        multi = load_multi_reward(rewards, device=device)
    check_direction_captions(multi, edits, evaluation.edits.source)
    scorers = (build_metrics(reward, extra_rewards, metrics, device=device)
               if reward is not None or extra_rewards or metrics else {})
    results, edit_report = run_edit_evaluation(build_models(policy, tuned, models), edits, scorers, evaluation, report,
                                               policy.height, policy.width, Path(out_dir), multi,
                                               evaluation.edits.grader)
    return summary_dict(results, report.baseline), results, edit_report


def check_edit_evaluation(evaluation: EvalConfig, train_edits: Optional[str]) -> None:
    """Refuse, before anything runs, an edit run without held-out edits, or held-out edits without an edit run."""
    if train_edits and evaluation.edits is None:
        raise ValueError(f"evaluation.edits is not set, but this run trains on edits (rollouts.edits {train_edits!r}): "
                         "set evaluation.edits.source to a folder of held-out (source, instruction) pairs, never the "
                         "training pairs (python -m ops.shapes_edits writes one for the shapes world)")
    if evaluation.edits is not None and not train_edits:
        raise ValueError(f"evaluation.edits {evaluation.edits.source!r} is set, but this run trains a text-to-image "
                         "model (no rollouts.edits): remove evaluation.edits, or train an edit family on edits")
    if train_edits and evaluation.edits is not None and evaluation.edits.source.rstrip("/") == train_edits.rstrip("/"):
        raise ValueError(f"evaluation.edits.source {evaluation.edits.source!r} is rollouts.edits, the training pairs: "
                         "evaluate on a held-out folder (python -m ops.shapes_edits data/edits/shapes_heldout "
                         "--seed 1)")


def check_edit_benchmark(has_benchmark: bool, evaluation: EvalConfig, metrics, rewards) -> None:
    """``srpo_evaluation``'s plan: exactly one of a benchmark (prompts) and ``evaluation.edits``, and something to
    score with; ``rewards:`` only on edits."""
    if has_benchmark == (evaluation.edits is not None):
        raise ValueError("srpo_evaluation needs exactly one of benchmark (prompts for a text-to-image model) and "
                         "evaluation.edits (held-out edits for an edit model): "
                         + ("remove one" if has_benchmark else "set benchmark.source or evaluation.edits.source"))
    if has_benchmark and not metrics:
        raise ValueError("metrics is empty: a benchmark is scored by metrics; give at least one")
    if has_benchmark and rewards is not None:
        raise ValueError("rewards (an edit reward's terms) is set with a benchmark: it scores edits only; remove it "
                         "or use metrics")
    if not has_benchmark and not metrics and rewards is None and evaluation.edits.grader is None:
        raise ValueError("nothing scores the edits: give metrics, rewards (the edit reward's terms) or "
                         "evaluation.edits.grader")
