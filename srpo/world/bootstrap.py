"""Bootstrap the shapes world: train its generator and reward, then check them against the targets.

Each stage is a function the ZenML steps wrap (``steps/train_world_*.py``, ``steps/check_world.py``)
and the benchmarks call directly:

- :func:`bootstrap_generator` -> a diffusers FLUX folder (``world.json`` inside holds the world
  spec, the training config and curves);
- :func:`bootstrap_reward` -> a transformers CLIPModel folder (``world.json`` likewise);
- :func:`bootstrap_edit_generator` -> a diffusers FLUX.1 Kontext folder, the edit model
  (:mod:`srpo.world.edit_generator`; the opt-in step of ``configs/shapes_bootstrap_edit.yaml``), graded
  on held-out edits (done / kept) into its ``world.json``;
- :func:`check_world` -> the numbers the issue asks for: the reward's ranking of true attribute
  words above their opposites on held-out images (target >= 95 %), the generator's colour
  correctness on samples graded from pixels (target >= 70 %), and the grader's own accuracy on
  drawn images.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from pydantic import Field

from srpo.config import StrictModel
from srpo.io import atomic_write_text
from srpo.world.edit_generator import EditGeneratorConfig, check_edit_model, train_edit_generator
from srpo.world.generator import GeneratorConfig, sample_images, save_pipeline, train_generator
from srpo.world.grader import fidelity, grade, shares
from srpo.world.reward import (RewardTrainConfig, attribute_ranking, blocks, save_reward, saturation_preference,
                               train_reward)
from srpo.world.shapes import BINARY_ATTRIBUTES, WorldSpec, all_base_prompts, draw

log = logging.getLogger(__name__)

WORLD_INFO = "world.json"


class WorldCheckConfig(StrictModel):
    """How the bootstrapped models are checked (held-out seeds never used in training)."""

    heldout_images: int = Field(512, ge=8, description="drawn images the reward and the grader are checked on")
    samples_per_prompt: int = Field(4, ge=1, description="generator samples per base prompt (60 prompts)")
    num_steps: int = Field(25, ge=1, description="Euler steps when sampling the generator")
    guidance: float = Field(3.5, ge=0)
    seed: int = 424242
    reward_target: float = 0.95
    generator_target: float = 0.70


def _write_info(folder: Path, info: dict) -> None:
    atomic_write_text(folder / WORLD_INFO, json.dumps(info, indent=2, sort_keys=True))


def bootstrap_generator(cfg: GeneratorConfig, spec: WorldSpec, out_dir: str | Path, on_log=None) -> dict:
    """Train the world's FLUX generator into ``out_dir``; returns its training summary."""
    return _save_pipeline("shapes-flux", *train_generator(cfg, spec, on_log=on_log), cfg, spec, out_dir)


def bootstrap_edit_generator(cfg: EditGeneratorConfig, spec: WorldSpec, out_dir: str | Path, on_log=None,
                             init: str | Path | None = None, check_edits: int = 0) -> dict:
    """Train the world's edit model (FLUX.1 Kontext; from the generator folder ``init`` when given) into
    ``out_dir``; returns its training summary, with ``check`` (:func:`check_edit_model` on ``check_edits``
    held-out edits) when ``check_edits`` > 0."""
    pipe, info = train_edit_generator(cfg, spec, on_log=on_log, init=init)
    if check_edits:
        from srpo.models.flux_kontext import FluxKontextPolicy

        info["check"] = check_edit_model(FluxKontextPolicy(pipe, "cpu"), spec, n=check_edits,
                                         attributes=cfg.attributes)
        log.info("edit model check: %.1f%% of held-out edits done, %.1f%% of unnamed attributes kept",
                 100 * info["check"]["model"]["done"], 100 * info["check"]["model"]["kept"])
    return _save_pipeline("shapes-kontext", pipe, info, cfg, spec, out_dir)


def _save_pipeline(kind: str, pipe, info: dict, cfg, spec: WorldSpec, out_dir: str | Path) -> dict:
    """``save_pretrained`` a trained pipeline with its ``world.json`` summary; returns the summary."""
    out_dir = Path(out_dir)
    save_pipeline(pipe, out_dir)
    summary = {"kind": kind, "world": spec.model_dump(mode="json"), "config": cfg.model_dump(mode="json"), **info}
    _write_info(out_dir, summary)
    return summary


def bootstrap_reward(cfg: RewardTrainConfig, spec: WorldSpec, out_dir: str | Path, on_log=None) -> dict:
    """Train the world's CLIP reward into ``out_dir``; returns its training summary."""
    start = time.perf_counter()
    model, curve = train_reward(cfg, spec, on_log=on_log)
    out_dir = Path(out_dir)
    save_reward(model, out_dir)
    summary = {"kind": "shapes-clip", "world": spec.model_dump(mode="json"), "config": cfg.model_dump(mode="json"),
               "loss_curve": curve, "seconds": time.perf_counter() - start,
               "params": sum(p.numel() for p in model.parameters())}
    _write_info(out_dir, summary)
    return summary


@torch.no_grad()
def check_reward(reward, spec: WorldSpec, cfg: WorldCheckConfig) -> dict:
    """Ranking accuracy of ``reward`` on held-out drawn images and on their 8x8-block versions."""
    images, _, scenes = draw(cfg.heldout_images, cfg.seed, spec)
    drawn = attribute_ranking(reward, images, scenes)
    blocky = attribute_ranking(reward, blocks(images), scenes)
    binary = [min(drawn[a], blocky[a]) for a in BINARY_ATTRIBUTES]
    return {"drawn": drawn, "blocks": blocky, "saturation_preference": saturation_preference(reward, scenes, spec),
            "attribute_words": min(binary), "passed": min(binary) >= cfg.reward_target}


@torch.no_grad()
def check_generator(policy, spec: WorldSpec, cfg: WorldCheckConfig) -> tuple[dict, torch.Tensor, list[str]]:
    """Colour correctness of generator samples (every base prompt, ``samples_per_prompt`` seeds)."""
    prompts = [p for p in all_base_prompts() for _ in range(cfg.samples_per_prompt)]
    seeds = [cfg.seed + 7919 * i for i in range(len(prompts))]
    images = sample_images(policy, prompts, seeds, cfg.num_steps, guidance=cfg.guidance)
    graded = grade(images, spec)
    fid = fidelity(graded, prompts)
    out = {"fidelity": fid, "shares": shares(graded), "num_samples": len(prompts),
           "colours": fid["colours"], "passed": fid["colours"] >= cfg.generator_target}
    return out, images, prompts


def check_grader(spec: WorldSpec, cfg: WorldCheckConfig) -> dict:
    """The grader's accuracy on drawn images (and on their 8x8-block versions, what the VAE decodes)."""
    images, captions_, scenes = draw(cfg.heldout_images, cfg.seed + 1, spec, attribute_prob=1.0)
    out = {}
    for name, imgs in (("drawn", images), ("blocks", blocks(images))):
        out[name] = fidelity(grade(imgs, spec), captions_)
    return out


def check_world(policy, reward, spec: WorldSpec, cfg: WorldCheckConfig) -> tuple[dict, torch.Tensor, list[str]]:
    """All bootstrap checks in one report (``passed`` is True when both targets are reached).

    Also returns the generator samples the check graded, with their prompts.
    """
    start = time.perf_counter()
    rew = check_reward(reward, spec, cfg)
    gen, images, prompts = check_generator(policy, spec, cfg)
    report = {"reward": rew, "generator": gen, "grader": check_grader(spec, cfg),
              "targets": {"reward_attribute_words": cfg.reward_target, "generator_colours": cfg.generator_target},
              "passed": rew["passed"] and gen["passed"], "seconds": time.perf_counter() - start}
    log.info("world check: reward ranks attribute words right on %.1f%%, generator colours right on %.1f%%",
             100 * rew["attribute_words"], 100 * gen["colours"])
    return report, images, prompts
