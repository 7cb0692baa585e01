"""Typed configuration, one model per concern.

Every experiment YAML in ``configs/`` is validated by these models before anything runs:
unknown keys, impossible values and inconsistent combinations raise errors that name the field
and say what to do instead.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Sequence

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from srpo.image_stats import IMAGE_STATS
from srpo.io import is_url, strip_file_scheme
from srpo.published import is_builtin, lookup_builtin
from srpo.schedules import MAX_TRAIN_SIGMA

def one_of(setting: str, value: str, known: Sequence[str]) -> str:
    """``value`` when it is one of ``known``; else a ``ValueError`` naming the setting and the choices."""
    if value not in known:
        raise ValueError(f"unknown {setting} {value!r}: choose one of {', '.join(known)}")
    return value


def strip_control_words(words: list[str]) -> list[str]:
    """Control words without surrounding blanks; a blank word is a ``ValueError``."""
    words = [w.strip() for w in words]
    if any(not w for w in words):
        raise ValueError("control words must not be blank strings")
    return words


#: A list of SRP control words (``positive_words`` / ``negative_words``), stripped, none blank.
ControlWords = Annotated[list[str], AfterValidator(strip_control_words)]


class StrictModel(BaseModel):
    """The base of every config model: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PolicyConfig(StrictModel):
    """Which flow model to tune and at what resolution."""

    pretrained: str = Field("builtin:tiny-flux", description="local folder, s3:// URL, hub id or builtin:<name>")
    transformer: Optional[str] = Field(None, description="optional diffusers transformer folder replacing the base one")
    family: Optional[str] = Field(None, description="model family (flux, qwen-image, sd3, flux2, flux2-klein, "
                                  "z-image; edit models: flux-kontext, qwen-image-edit(-plus); default: read from the "
                                  "folder's model_index.json)")
    negative_prompt: str = Field("", description="true-CFG families (SD3.5, Qwen-Image): the negative prompt")
    cfg_in_training: bool = Field(False, description="true-CFG families: guide the training forward too (two "
                                  "transformer calls per model step; the authors' Qwen script trains without)")
    height: int = 64
    width: int = 64
    dtype: Literal["float32", "bfloat16"] = "float32"
    autocast: Literal["none", "bfloat16"] = "none"
    frozen_dtype: Optional[Literal["float32", "bfloat16"]] = Field(
        None, description="dtype of the weights that are not trained: VAE, text encoders and, with LoRA, the "
        "transformer's base weights (default: the autocast dtype when autocast is on, else dtype)")
    device: str = "auto"
    base_quantization: Literal["none", "int8", "fp8", "nf4"] = Field(
        "none", description="LoRA only: store the transformer's frozen base weights quantised (torchao; "
        "int8/fp8 1 byte, nf4 half a byte per weight); the adapter trains in full precision. See docs/performance.md")
    gpu_memory_gb: Optional[float] = Field(None, gt=0, description="memory of the GPU the config is written for: "
                                           "python -m ops.validate and every step check the memory plan against it "
                                           "(a smaller GPU present at run time is the budget instead)")
    gradient_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile the transformer's repeated blocks (regional "
                          "compilation): faster rollouts and updates after a one-time compile; see docs/performance.md")
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode when compile is on (max-autotune tunes matmul kernels: slower start)")
    compile_backend: str = Field("inductor", description="torch.compile backend (aot_eager: trace only, for debugging)")

    @field_validator("pretrained")
    @classmethod
    def _known_builtin(cls, pretrained: str) -> str:
        if is_builtin(pretrained):
            lookup_builtin("policy", pretrained)  # raises with the known names
        return pretrained

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v <= 0 or v % 16:
            raise ValueError(f"image side {v} must be a positive multiple of 16 (VAE x8 times the "
                             "2x2 latent packing); use for example 512, 720 or 1024")
        return v

    @model_validator(mode="after")
    def _frozen_dtype_needs_autocast(self) -> "PolicyConfig":
        if self.autocast == "none" and self.frozen_dtype not in (None, self.dtype):
            raise ValueError(f"frozen_dtype {self.frozen_dtype} differs from dtype {self.dtype} without autocast: "
                             "the modules would pass each other tensors of different dtypes. Set autocast: "
                             "bfloat16, or leave frozen_dtype out")
        return self


class RolloutConfig(StrictModel):
    """How clean samples for training are made: sampled by the policy (online) or encoded (offline)."""

    mode: Literal["online", "offline"] = "online"
    num_steps: int = Field(25, ge=1, description="Euler steps of the no-grad rollout")
    shift: Optional[float] = Field(3.0, gt=0, description="static schedule shift; null: the model folder's scheduler "
                                   "config (dynamic shifting by resolution where it asks for it)")
    guidance: float = Field(1.0, ge=0, description="rollout guidance: the distilled value (FLUX.1, FLUX.2 [dev]) or "
                            "the true-CFG scale (SD3.5, Qwen-Image), as the family reads it")
    num_prompts: Optional[int] = Field(None, ge=1, description="rollouts to precompute (default: all train prompts)")
    images: Optional[str] = Field(None, description="offline: folder or URL with images and metadata.jsonl")
    edits: Optional[str] = Field(None, description="edit families: folder or s3:// prefix of (source image, "
                                 "instruction) pairs (srpo.edit_data) to train on instead of the prompts; online: the "
                                 "policy edits each source, offline: each pair's target image is x0")
    seed: int = 0

    @model_validator(mode="after")
    def _offline_needs_images(self) -> "RolloutConfig":
        if self.edits and self.images:
            raise ValueError(f"rollouts.images {self.images!r} with rollouts.edits {self.edits!r}: an edit run's "
                             "offline x0 are the pairs' target images; remove rollouts.images")
        if self.mode == "offline" and not self.images and not self.edits:
            raise ValueError("offline mode needs rollouts.images: a folder (or s3:// URL) with images and a "
                             "metadata.jsonl of {\"file_name\": ..., \"text\": ...} lines")
        return self


#: Guard metric names the guard itself knows: the training reward on the plain prompt and the image
#: statistics; ``world.<key>`` names the shapes-world grader, any other name a metric of the evaluation suite
#: (both checked by the builders that make them: srpo.world.guard_metrics, srpo.evaluation.guard_metrics).
GUARD_REWARD = "reward"
GUARD_WORLD_PREFIX = "world."
#: The training objective on the guard's images (the reward towards the positive words, minus the negative
#: words' when there are any): recorded at every check of a run with a reward, read by ``select: most_progress``.
GUARD_OBJECTIVE = "objective"
#: Guard metrics whose per-image values lie in [0, 1]: every ``world.<key>`` (shares, fidelities, mean HSV)
#: and these image statistics. Their per-image standard deviation is at most ``sqrt(m (1 - m))`` at mean m
#: (Bhatia-Davis; the binomial one for a share), so at most 0.5: what the resolution check assumes for them.
UNIT_RANGE_STATS = ("saturation", "brightness", "contrast", "hf_energy")
#: A tolerance must span this many standard errors of its metric at the base value (the resolution check).
RESOLUTION_SES = 2.0


def unit_range(metric: str) -> bool:
    """Whether ``metric``'s per-image values lie in [0, 1] (see :data:`UNIT_RANGE_STATS`)."""
    return metric.startswith(GUARD_WORLD_PREFIX) or metric in UNIT_RANGE_STATS


def resolving_images(tolerance: float, sd: float, ses: float = RESOLUTION_SES) -> int:
    """The fewest images whose standard error ``sd / sqrt(n)`` fits ``ses`` times into ``tolerance``."""
    return max(1, math.ceil((ses * sd / tolerance) ** 2 - 1e-9))


class GuardRule(StrictModel):
    """A tolerance around a guard metric's value at the first check (the base model), with a patience.

    Exactly one of ``drop`` (value >= start - drop), ``relative_drop`` (value >= start - r |start|),
    ``drift`` (|value - start| <= drift) or ``relative_drift`` (|value - start| <= r |start|). The rule
    is broken when the value lies outside by more than ``GuardConfig.margin`` standard errors.
    """

    drop: Optional[float] = Field(None, ge=0)
    relative_drop: Optional[float] = Field(None, ge=0)
    drift: Optional[float] = Field(None, ge=0)
    relative_drift: Optional[float] = Field(None, ge=0)
    patience: int = Field(1, ge=1, description="consecutive checks outside the tolerance before the action")
    action: Literal["warn", "stop"] = Field("stop", description="stop: ends the run and bounds what may be "
                                            "published; warn: logged and recorded only")
    expect: Optional[float] = Field(None, ge=0, le=1, description="the metric's expected value on the base model "
                                    "(a [0, 1] metric): the resolution check's standard deviation is then "
                                    "sqrt(e (1 - e)) instead of the worst case 0.5")
    sd: Optional[float] = Field(None, gt=0, description="the metric's expected per-image standard deviation on "
                                "the base model: lets the resolution check size the set for any metric")
    unless_steered: list[str] = Field(default_factory=list, description="control words that move this metric: "
                                      "the rule is off when train.positive_words or negative_words name one")

    @model_validator(mode="after")
    def _one_tolerance(self) -> "GuardRule":
        given = [k for k in ("drop", "relative_drop", "drift", "relative_drift") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a guard rule has tolerances {given or 'none'}: give exactly one of drop, "
                             "relative_drop, drift or relative_drift")
        if self.expect is not None and self.sd is not None:
            raise ValueError(f"a guard rule has expect {self.expect} and sd {self.sd}: give one (expect for a "
                             "[0, 1] metric, sd for any other)")
        self.unless_steered = [w.strip().lower() for w in self.unless_steered]
        return self

    def bounds(self, start: float) -> tuple[float, float]:
        """``(low, high)``: the values within tolerance of ``start``."""
        inf = float("inf")
        if self.drop is not None:
            return start - self.drop, inf
        if self.relative_drop is not None:
            return start - self.relative_drop * abs(start), inf
        width = self.drift if self.drift is not None else self.relative_drift * abs(start)
        return start - width, start + width

    def tolerance(self, start: Optional[float]) -> Optional[float]:
        """The tolerance's width at base value ``start`` (``None`` when relative and ``start`` unknown)."""
        if self.drop is not None or self.drift is not None:
            return self.drop if self.drop is not None else self.drift
        if start is None:
            return None
        return (self.relative_drop if self.relative_drop is not None else self.relative_drift) * abs(start)

    def compile_sd(self, metric: str) -> Optional[float]:
        """The per-image standard deviation the resolution check assumes before any image exists (``None``:
        unknown, checked on the base model's images instead)."""
        if self.sd is not None:
            return self.sd
        if not unit_range(metric):
            return None
        return 0.5 if self.expect is None else math.sqrt(self.expect * (1 - self.expect))

    def steered_off(self, words: Sequence[str]) -> bool:
        """Whether one of the control ``words`` is declared to move this rule's metric."""
        return any(w.strip().lower() in self.unless_steered for w in words)


class GuardConfig(StrictModel):
    """Held-out checks during training: every ``every`` updates, score fixed prompts and seeds, apply rules."""

    every: int = Field(5, ge=1, description="updates between checks (one more at update 0 and at the end)")
    prompts: Optional[list[str]] = Field(None, description="held-out prompts (default: the first num_prompts "
                                         "of the held-out split the step passes)")
    num_prompts: int = Field(8, ge=1, description="prompts taken from the held-out split when prompts is not given")
    seeds: Optional[list[int]] = Field(None, description="one seed per prompt (default: seed + 7919 i)")
    seeds_per_prompt: int = Field(1, ge=1, description="images per prompt, each from its own seed: more images "
                                  "make a share-like metric (a fidelity, a grader's share) less noisy")
    seed: int = 777
    num_steps: Optional[int] = Field(None, ge=1, description="sampler steps of the guard's images "
                                     "(default: rollouts.num_steps); fewer make a large guard set cheap")
    guidance: Optional[float] = Field(None, ge=0, description="FLUX guidance of the guard's images "
                                      "(default: rollouts.guidance)")
    batch_size: int = Field(4, ge=1, description="guard images rendered together")
    metrics: list[str] = Field(default_factory=lambda: [GUARD_REWARD, *IMAGE_STATS],
                               description="reward (training reward, plain prompt), image statistics "
                               f"({', '.join(IMAGE_STATS)}), world.<key> (shapes-world grader) or an evaluation "
                               "suite metric name (pickscore, imagereward, aesthetic_v2.5, ...)")
    rules: dict[str, GuardRule] = Field(default_factory=dict, description="metric name -> tolerance, patience, action")
    margin: float = Field(1.0, ge=0, description="standard errors by which a value must lie outside its "
                          "tolerance to break a rule (stop), and inside it for the check to be published")
    foresight: float = Field(2.0, ge=0, description="a stop rule's loss bound extrapolated at this many times its "
                             "rate since the previous check: when it would pass the tolerance before the next regular "
                             "check, checks come sooner (the interval halves, down to 1 update); 0: only every `every`")
    extra_checks: float = Field(0.5, ge=0, description="dense checks allowed at any point of a run, as a share of "
                                "the regular checks so far (update 0 and every `every`): bounds the guard's extra time")
    early_check: bool = Field(True, description="one dense check halfway to the first regular check (within "
                              "extra_checks): a run that breaks a rule within its first interval still has a trend "
                              "and a publishable trained check")
    recoveries: int = Field(3, ge=0, description="times the run rewinds instead of going on past its tolerances: when "
                            "a check after the selection is no longer publishable (a stop rule not confidently kept), "
                            "the selected check's weights come back, the optimizer's moments restart and the learning "
                            "rate is multiplied by recover_lr; then the stop rules stop as usual (0: never)")
    recover_lr: float = Field(0.5, gt=0, lt=1, description="the learning rate's factor at each recovery")
    anchor_pull: float = Field(0.0, ge=0, lt=1, description="a trust region the recoveries tighten: after each "
                               "recovery every update takes back this share (times the recoveries made) of the "
                               "trained parameters' distance to their start (a copy of them is kept; 0: off)")
    select: Literal["most_progress", "last_ok", "best_reward_ok", "last"] = Field(
        "most_progress", description="published weights, among the checks within every stop rule: most_progress "
        "(the highest training objective on the guard's images), last_ok (the last), best_reward_ok (the best "
        "plain-prompt reward); last: the final weights")
    snapshot_dir: Optional[str] = Field(None, description="full fine-tuning: keep the selected candidate as a "
                                        "file in this folder instead of a CPU copy")

    @field_validator("metrics")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("train.guard.metrics is empty: name at least one metric, e.g. [reward, colourfulness]")
        seen = set()
        for name in names:
            if name in seen:
                raise ValueError(f"train.guard.metrics names {name!r} twice: list each metric once")
            seen.add(name)
            if not name.strip() or name == GUARD_WORLD_PREFIX:
                raise ValueError(f"train.guard.metrics has the name {name!r}: give a metric name, e.g. "
                                 f"reward, {', '.join(IMAGE_STATS)}, world.colours or pickscore")
            if name == GUARD_OBJECTIVE:
                raise ValueError(f"train.guard.metrics names {name!r}, which the guard records by itself (the "
                                 "training objective on its images): remove it from the metrics")
        return names

    @property
    def num_images(self) -> int:
        """Guard images per check as configured (a shorter held-out split gives fewer: checked again at run time)."""
        return (len(self.prompts) if self.prompts is not None else self.num_prompts) * self.seeds_per_prompt

    @model_validator(mode="after")
    def _consistent(self) -> "GuardConfig":
        for name in self.rules:
            if name not in self.metrics:
                raise ValueError(f"train.guard.rules has a rule for {name!r}, which train.guard.metrics does not "
                                 f"list ({', '.join(self.metrics)}): add it to metrics or remove the rule")
        if self.select == "best_reward_ok" and GUARD_REWARD not in self.metrics:
            raise ValueError("train.guard.select is best_reward_ok but train.guard.metrics lacks 'reward': add "
                             "reward to the metrics or select last_ok")
        if self.prompts is not None and not self.prompts:
            raise ValueError("train.guard.prompts is an empty list: give prompts or leave it out to take "
                             "num_prompts from the held-out split")
        if self.seeds is not None and self.prompts is not None and len(self.seeds) != len(self.prompts):
            raise ValueError(f"train.guard.seeds has {len(self.seeds)} seeds for {len(self.prompts)} prompts: "
                             "give one seed per prompt or leave seeds out")
        if self.seeds is not None and self.seeds_per_prompt > 1:
            raise ValueError(f"train.guard.seeds is given with seeds_per_prompt {self.seeds_per_prompt}: give one "
                             "seed per image by repeating prompts in train.guard.prompts, or leave seeds out")
        if self.seeds is not None and self.prompts is None and len(self.seeds) != self.num_prompts:
            raise ValueError(f"train.guard.seeds has {len(self.seeds)} seeds for num_prompts {self.num_prompts}: "
                             "give one seed per prompt or leave seeds out")
        for name, rule in self.rules.items():
            if rule.expect is not None and not unit_range(name):
                raise ValueError(f"train.guard.rules.{name}.expect is {rule.expect}, but {name} is not a [0, 1] "
                                 "metric (world.<key>, " + ", ".join(UNIT_RANGE_STATS) + "): declare its per-image "
                                 "standard deviation (sd) instead")
            problem = self.resolution_problem(name, rule, self.num_images)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def resolution_ses(self) -> float:
        """Standard errors a tolerance must span: the band between the publish test (``margin`` se inside) and
        the stop test (``margin`` se outside) fits in it, and at least :data:`RESOLUTION_SES`."""
        return RESOLUTION_SES * max(1.0, self.margin)

    def resolution_problem(self, name: str, rule: GuardRule, n: int, sd: Optional[float] = None,
                           start: Optional[float] = None) -> Optional[str]:
        """Why ``n`` images cannot resolve ``rule`` on ``name`` (``None`` when they can, or when it cannot be
        told yet): its tolerance is below :attr:`resolution_ses` standard errors at the base value.

        ``sd``/``start``: measured on the base model's images (at run time); else what the rule declares or
        the worst case of a [0, 1] metric (at compile time).
        """
        sd = rule.compile_sd(name) if sd is None else sd
        tolerance = rule.tolerance(start if start is not None else rule.expect)
        if sd is None or tolerance is None or sd == 0:
            return None
        if tolerance == 0:
            return (f"train.guard.rules.{name}: a tolerance of 0 cannot be resolved by any number of guard images "
                    "(every image differs by chance): give a positive tolerance")
        ses = self.resolution_ses
        need = resolving_images(tolerance, sd, ses)
        if n >= need:
            return None
        per_prompt = -(-need // max(1, n // self.seeds_per_prompt))
        where = ("measured on the base model's images" if start is not None else
                 "declared" if rule.sd is not None else f"at base value {rule.expect}" if rule.expect is not None
                 else "worst case of a [0, 1] metric")
        return (f"train.guard.rules.{name}: a tolerance of {tolerance:.4g} is below {ses:g} standard "
                f"errors on {n} guard images (margin {self.margin:g}; per-image sd {sd:.3g}, {where}: {ses:g} se = "
                f"{ses * sd / math.sqrt(n):.3g}); use at least {need} images (prompts x seeds_per_prompt, "
                f"e.g. {max(1, n // self.seeds_per_prompt)} x {per_prompt}), a wider tolerance"
                + ("" if rule.expect is not None or rule.sd is not None or not unit_range(name) else
                   ", or declare the expected base value (expect)"))

    def prompts_and_seeds(self, held_out: Optional[list[str]] = None) -> tuple[list[str], list[int]]:
        """The guard's images as (prompt, seed) lists: ``prompts`` (else the first ``num_prompts`` of
        ``held_out``), each ``seeds_per_prompt`` times; seed ``seed + 7919 i`` for image i unless ``seeds``."""
        prompts = list(self.prompts) if self.prompts is not None else list(held_out or [])[: self.num_prompts]
        if not prompts:
            raise ValueError("train.guard has no prompts: set train.guard.prompts or give the guard a held-out "
                             "split (the pipeline's eval prompts)")
        prompts = [p for p in prompts for _ in range(self.seeds_per_prompt)]
        seeds = list(self.seeds) if self.seeds is not None else [self.seed + 7919 * i for i in range(len(prompts))]
        return prompts, seeds[: len(prompts)]


RewardForm = Literal["plain", "sgp", "srp", "cfg", "weighted", "image_relative"]
#: The reward forms that put control words on the reward's text side.
TEXT_FORMS = ("sgp", "srp", "cfg", "weighted")


class GRPOConfig(StrictModel):
    """Policy-gradient settings of ``train.method: grpo`` (Flow-GRPO / DanceGRPO; maths in :mod:`srpo.grpo`).

    Each update samples ``group_size`` images per prompt with the SDE that has the ODE's marginals,
    normalises the rewards within each group and applies PPO's clipped objective on a subset of the
    sampler's steps.
    """

    group_size: int = Field(4, ge=2, description="G: images sampled per prompt (a group)")
    noise_level: float = Field(0.7, ge=0, description="a: the SDE's noise level (0 is the ODE: nothing to train)")
    noise_schedule: Literal["flow_grpo", "constant"] = Field(
        "flow_grpo", description="sigma_t = a sqrt(t / (1 - t)) (Flow-GRPO) or sigma_t = a (DanceGRPO's eta)")
    steps: Literal["all", "random", "first"] = Field(
        "all", description="sampler steps trained per update: all, a random subset (DanceGRPO) or the first "
        "num_train_steps (Flow-GRPO-Fast)")
    num_train_steps: Optional[int] = Field(None, ge=1, description="random / first: how many steps")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip c: the ratio is clipped to [1-c, 1+c]")
    advantage_clip: Optional[float] = Field(5.0, gt=0, description="bound on |advantage| (DanceGRPO's adv_clip_max)")
    advantage_eps: float = Field(1e-6, gt=0, description="added to the group std before dividing")
    kl: float = Field(0.0, ge=0, description="beta of the KL term to the frozen reference (0: no reference kept)")
    shared_noise: bool = Field(False, description="every member of a group starts from the same initial noise "
                               "(DanceGRPO); the SDE noise still differs")
    inner_epochs: int = Field(1, ge=1, description="optimizer steps on each sampled batch (the first has ratio 1)")
    micro_batch: Optional[int] = Field(None, ge=1, description="samples per backward micro-step (default: all of "
                                       "this process's B*G at once)")
    log_prob: Literal["mean", "sum"] = Field(
        "mean", description="log-probability per step: mean over latent elements (Flow-GRPO's, ratios stay "
        "near 1) or sum (the exact density)")

    @model_validator(mode="after")
    def _consistent(self) -> "GRPOConfig":
        if self.steps != "all" and self.num_train_steps is None:
            raise ValueError(f"train.grpo.steps is {self.steps!r} but train.grpo.num_train_steps is not set: give "
                             "how many sampler steps to train on, or use steps: all")
        if self.noise_level == 0:
            raise ValueError("train.grpo.noise_level is 0: the sampler is then the deterministic ODE and no step "
                             "has a log-probability; use a > 0 (Flow-GRPO 0.7, DanceGRPO's eta 0.3)")
        return self


class NFTConfig(StrictModel):
    """DiffusionNFT settings (arXiv 2509.16117; maths in :mod:`srpo.nft`), the authors' defaults.

    Implements the paper's implicit policies ``v+- = v_old +- beta (v - v_old)``, its negative-aware loss
    ``E[r ||v+ - u||^2 + (1 - r) ||v- - u||^2]`` with rewards as optimality probabilities
    ``r = clip(A)/(2c) + 1/2`` (optimum ``v_old + (2 / beta) alpha (v_pos - v_old)``), the adaptive loss
    weighting and the soft update of the old policy ``old <- d old + (1 - d) theta``, as NVlabs/DiffusionNFT's
    scripts/train_nft_sd3.py and config/nft.py do. Which paper section or code line each setting implements:
    docs/training.md, "Settings against the papers" (the method section's reward transform, implicit policies,
    loss and its optimum; the practical design's adaptive weighting and soft update).
    """

    group_size: int = Field(24, ge=2, description="images per prompt (num_image_per_prompt)")
    beta: float = Field(1.0, gt=0, description="the mixing coefficient of v+- = v_old +- beta (v - v_old); "
                        "the authors' default 1.0 (0.1 for OCR)")
    advantage_clip: float = Field(5.0, gt=0, description="c: advantages clipped to [-c, c], then mapped to r in "
                                  "[0, 1]; the loss is also scaled by c / beta (the authors' constant)")
    advantage_eps: float = Field(1e-4, gt=0, description="added to the std before dividing")
    global_std: bool = Field(True, description="divide by the std of the whole batch (the authors') instead of "
                             "each group's")
    adaptive_weighting: bool = Field(True, description="divide each sample's squared error by its own detached "
                                     "mean absolute error (on the x0 prediction)")
    kl: float = Field(1e-4, ge=0, description="weight of mean((v - v_base)^2) to the frozen base")
    train_fraction: float = Field(0.99, gt=0, le=1, description="each sample trains int(N * fraction) of the "
                                  "sampler's N levels, in random order, fresh noise per level")
    decay_flat: int = Field(0, ge=0, description="old-policy decay: 0 for the first decay_flat updates ...")
    decay_rate: float = Field(0.001, ge=0, description="... then (update - decay_flat) * decay_rate ...")
    decay_cap: float = Field(0.5, ge=0, lt=1, description="... capped here (authors' type 1: 0, 0.001, 0.5; "
                             "type 2: 75, 0.0075, 0.999)")
    micro_batch: Optional[int] = Field(None, ge=1, description="samples per backward micro-step (default: all of "
                                       "this process's batch_size x group_size at once)")

    @property
    def loss_scale(self) -> float:
        """The authors' constant on the policy loss: ``advantage_clip / beta``."""
        return self.advantage_clip / self.beta


class AWMConfig(StrictModel):
    """Advantage-weighted matching settings (arXiv 2509.25050; maths in :mod:`srpo.awm`), the authors'
    defaults (scxue/advantage_weighted_matching, config/dgx_awm.py: SD3.5, 14 sampler steps).

    Implements ``L = E[A w(t, ||v - (eps - x0)||^2)]`` (the AWM objective: the pretraining flow-matching
    loss weighted by advantages), the generalised-Huber time weighting, the KL to the base and the KL to a
    soft-updated EMA policy (their TRPO-like trust region), as scripts/train_sd3_awm.py does. Which paper section
    or code line each setting implements: docs/training.md, "Settings against the papers".
    """

    group_size: int = Field(24, ge=2, description="images per prompt (num_image_per_prompt)")
    advantage_clip: float = Field(5.0, gt=0, description="advantages clipped to [-c, c] ...")
    advantage_max: float = Field(1.0, gt=0, description="... then rescaled to [-advantage_max, advantage_max]")
    advantage_eps: float = Field(1e-4, gt=0, description="added to the std before dividing")
    global_std: bool = Field(True, description="divide by the std of the whole batch (the authors')")
    weighting: Literal["uniform", "t", "t2", "ghuber"] = Field(
        "ghuber", description="time weighting of the error: e, t e, t^2 e or t ((e + 1e-10)^p - 1e-10^p) / p")
    ghuber_power: float = Field(0.25, gt=0, le=1, description="p of the generalised Huber weighting")
    num_train_steps: int = Field(6, ge=1, description="sampler steps trained per sample, one from each stratum "
                                 "of steps 1..int(N * train_fraction)")
    train_fraction: float = Field(0.9, gt=0, le=1, description="the strata cover this fraction of the steps")
    kl: float = Field(0.001, ge=0, description="beta: weight of mean((v - v_base)^2) (0.003 for OCR)")
    ema_kl: float = Field(1.0, ge=0, description="weight of mean((v - v_ema)^2) to the soft-updated EMA policy")
    ema_decay_rate: float = Field(0.001, ge=0, description="EMA policy decay: min(ema_decay_cap, rate * update)")
    ema_decay_cap: float = Field(0.3, ge=0, lt=1, description="cap of the EMA policy's decay")
    micro_batch: Optional[int] = Field(None, ge=1, description="samples per backward micro-step (default: all of "
                                       "this process's batch_size x group_size at once)")


class MixGRPOConfig(StrictModel):
    """The SDE window of MixGRPO (arXiv 2507.21802) and Flow-GRPO-Fast (maths in :mod:`srpo.mixgrpo`).

    The policy-gradient settings (group size, noise level, clip, KL) stay in :class:`GRPOConfig`; this
    says which steps are SDE and trained. ``sliding``: MixGRPO's progressive window (the authors'
    defaults: 4 steps of 25, moved by 1 every 25 updates, rolled back; Tencent-Hunyuan/MixGRPO's
    GRPOTrainingStates; the paper's mixed ODE-SDE sampling with its sliding window); ``branch``: Flow-GRPO-Fast's
    random window of 2 steps within the first half (no paper: flow_grpo's fast pipelines). Per setting:
    docs/training.md, "Settings against the papers".
    """

    mode: Literal["sliding", "branch"] = Field("sliding", description="sliding (MixGRPO) or branch "
                                               "(Flow-GRPO-Fast)")
    window_size: int = Field(4, ge=1, description="consecutive SDE (and trained) steps; branch: 1-2 "
                             "(Flow-GRPO-Fast uses 2)")
    shift_every: int = Field(25, ge=1, description="sliding: updates between moves of the window")
    stride: int = Field(1, ge=1, description="sliding: steps the window moves each time")
    roll_back: bool = Field(True, description="sliding: restart at step 0 once the window reaches the end")
    branch_range: Optional[tuple[int, int]] = Field(
        None, description="branch: [lo, hi) of steps the window lies in (default: the first half, [0, N // 2))")

    @model_validator(mode="after")
    def _consistent(self) -> "MixGRPOConfig":
        if self.branch_range is not None:
            lo, hi = self.branch_range
            if lo < 0 or hi - lo < self.window_size:
                raise ValueError(f"train.mixgrpo.branch_range {list(self.branch_range)} does not hold a window of "
                                 f"{self.window_size} steps: give 0 <= lo and hi - lo >= window_size")
            if self.mode != "branch":
                raise ValueError("train.mixgrpo.branch_range is set but mode is sliding: drop it or use mode: branch")
        return self


class DRTuneConfig(StrictModel):
    """DRTune settings (arXiv 2405.00760; maths in :func:`srpo.direct_align.drtune_sample`), FlowBP's defaults
    (RuoyuWang-2077/FlowBP, trainers/flux1/drtune.py).

    The whole Euler chain runs with the gradient stopped at every model input (the paper's stop-gradient),
    ``num_train_steps`` equally spaced steps keep their graph (its training-step subset), and the reward
    reads the one-step clean prediction at a step drawn from the last ``early_stop`` ones (its early stop).
    Needs a differentiable reward. Per setting: docs/training.md, "Settings against the papers".
    """

    num_train_steps: int = Field(3, ge=1, description="K: equally spaced sampler steps with grad, random start")
    early_stop: Optional[int] = Field(None, ge=0, description="the reward reads the prediction at one of the last "
                                      "early_stop steps (0: the final image; default round(0.4 N))")
    early_stop_ratio: float = Field(0.4, ge=0, le=1, description="the default early_stop as a fraction of N")

    @model_validator(mode="after")
    def _one_early_stop(self) -> "DRTuneConfig":
        if {"early_stop", "early_stop_ratio"} <= self.model_fields_set and self.early_stop is not None:
            raise ValueError(f"train.drtune sets both early_stop ({self.early_stop}) and early_stop_ratio "
                             f"({self.early_stop_ratio}): give one (early_stop counts steps, the ratio a fraction of N)")
        return self

    def stop_window(self, num_steps: int) -> int:
        """``early_stop`` for a chain of ``num_steps`` steps (FlowBP: ``round(ratio * N)`` when not given)."""
        return self.early_stop if self.early_stop is not None else int(round(self.early_stop_ratio * num_steps))


#: The ``TrainConfig`` fields that hold a method's settings, and each one's type (its defaults). Which
#: methods read which blocks is the method registry's (``srpo.training.methods``: ``Method.settings``):
#: a block set for a method that does not read it is refused there, and the blocks it reads are filled
#: with their defaults when not given (``Method.configure``).
METHOD_SETTINGS: dict[str, type[StrictModel]] = {"grpo": GRPOConfig, "mixgrpo": MixGRPOConfig, "nft": NFTConfig,
                                                 "awm": AWMConfig, "drtune": DRTuneConfig}


class TrainConfig(StrictModel):
    """The SRPO / Direct-Align update, its timesteps, rewards and optimiser."""

    method: str = Field(
        "srpo", description="a row of the method registry (srpo.training.methods.METHODS: srpo, direct_align, refl, "
        "draft_lv, draft, grpo, mixgrpo, nft, awm, drtune); this layer cannot import it, so the run's validation "
        "(srpo.training.job.TrainingJob.validate_run) refuses a name that is not a row")
    grpo: Optional[GRPOConfig] = Field(None, description="grpo, mixgrpo: group size, noise level, clip, KL and step "
                                       "subset (default GRPOConfig())")
    mixgrpo: Optional[MixGRPOConfig] = Field(None, description="mixgrpo: the SDE window (default MixGRPOConfig())")
    nft: Optional[NFTConfig] = Field(None, description="nft: DiffusionNFT's settings (default NFTConfig())")
    awm: Optional[AWMConfig] = Field(None, description="awm: advantage-weighted matching's settings (default "
                                     "AWMConfig())")
    drtune: Optional[DRTuneConfig] = Field(None, description="drtune: trained steps and early stop (default "
                                           "DRTuneConfig())")
    draft_steps: int = Field(1, ge=1, description="draft: sampler steps to backpropagate through (all = full chain)")
    steps: int = Field(10, ge=1, description="optimizer updates to apply, exactly")
    batch_size: int = Field(1, ge=1)
    seed: int = 0
    # timesteps
    grid_start_index: int = Field(5, ge=0)
    grid_end_index: int = Field(25, ge=1)
    grid_schedule_steps: int = Field(50, ge=2)
    grid_size: int = Field(201, ge=2)
    shift: float = Field(3.0, gt=0)
    sigma_range: Optional[tuple[float, float]] = Field(None, description="(low, high) overrides the grid's bounds")
    d_sigma: Optional[float] = Field(None, gt=0, description="model step size (default: a tenth of the grid span)")
    num_injections: int = Field(1, ge=1, description="noise levels per clean sample, one micro-step each")
    discount: Literal["none", "linear", "shifted_linspace"] = "none"
    discount_floor: float = Field(0.3, ge=0, le=1)
    guidance: float = Field(3.5, ge=0, description="FLUX distilled guidance in the training forward")
    # reward
    reward_form: RewardForm = "weighted"
    positive_words: ControlWords = Field(default_factory=lambda: ["Natural-lighting", "Detail", "Detailed", "Real"])
    negative_words: ControlWords = Field(default_factory=lambda: ["Concept art", "Painting", "Anime", "Flat", "Oil"])
    k_denoise: tuple[float, float] = (0.10, 0.25)
    k_inversion: tuple[float, float] = (0.30, 0.01)
    cfg_k: float = 1.5
    noise_level: float = Field(0.05, gt=0, le=1, description="image_relative: pixel-noise std of the noised copy "
                               "whose score is subtracted ([0, 1] images; supplement S1)")
    content_weight: float = Field(0.0, ge=0, description="a content term: this weight x the reward on the plain "
                                  "prompt (no control words) added to the form's reward, its penalty -r on the inversion "
                                  "branch. The relative forms pay for the words' difference, not for what the prompt asks "
                                  "for; this term holds the prompt's content while the words steer (0: off)")
    inversion: bool = True
    fuse_branches: bool = Field(
        False, description="srpo: run a level's denoise and inversion branches as one batch of 2B (one "
        "transformer forward, VAE decode, reward pass and backward instead of two): the same gradient up to "
        "float rounding and twice a micro-step's activation memory; faster where a small batch leaves a GPU's "
        "matrix products small or its kernel launches exposed")
    loss: Literal["hinge", "linear"] = "hinge"
    tau: float = 0.7
    # optimiser (the SRPO authors' FLUX run: AdamW lr 5e-6, betas 0.9/0.999, wd 1e-4, clip 0.1, constant LR)
    learning_rate: float = Field(5e-6, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0)
    max_grad_norm: float = Field(0.1, gt=0)
    log_every: int = Field(10, ge=1, description="write a log line every N updates (and after the last); the "
                           "progress bar shows every update")
    # what is trained
    finetune: Literal["full", "lora"] = "full"
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Optional[list[str]] = Field(
        None, description="module-name suffixes to adapt (default: the model family's own, policy.lora_targets)")
    # scale, memory and faults
    distributed: Literal["ddp", "fsdp"] = Field("ddp", description="strategy when several processes run")
    fsdp_param_dtype: Optional[Literal["bfloat16"]] = Field(
        None, description="fsdp: gather and compute with the parameters in this dtype (FSDP2 mixed precision: "
        "half the all-gather traffic, no per-forward casts); shards and gradient reduction stay fp32")
    num_processes: int = Field(1, ge=1, description="processes the pipeline step launches on its node (one per GPU)")
    num_nodes: int = Field(1, ge=1, description="nodes the run spans (the multi-node pipeline's pods): FSDP shards "
                           "over num_nodes x num_processes, and the memory plan counts that world")
    vae_gradient_checkpointing: bool = False
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N updates (0: never)")
    checkpoint_dir: Optional[str] = Field(None, description="folder for checkpoints; a rerun resumes from it")
    keep_checkpoints: int = Field(2, ge=1)
    max_bad_steps: int = Field(5, ge=1, description="consecutive non-finite updates before the run stops")
    trackers: list[str] = Field(default_factory=list, description="accelerate trackers, e.g. [tensorboard]")
    guard: Optional[GuardConfig] = Field(None, description="held-out checks, stop rules and the published "
                                         "selection (off when not given)")

    @field_validator("checkpoint_dir")
    @classmethod
    def _local_checkpoint_dir(cls, folder: Optional[str]) -> Optional[str]:
        folder = strip_file_scheme(folder) if folder is not None else None  # a local path written as a URL
        if folder is not None and is_url(folder):
            raise ValueError(f"checkpoint_dir {folder!r} is a URL: checkpoints are written to a local or mounted "
                             "folder (a temporary name, then an atomic rename, which object stores lack); mount "
                             "the bucket or use a persistent volume and give its path")
        return folder

    @field_validator("sigma_range")
    @classmethod
    def _sigma_bounds(cls, rng):
        if rng is None:
            return rng
        lo, hi = rng
        if not (0.0 < lo < hi <= MAX_TRAIN_SIGMA):
            raise ValueError(f"sigma_range {rng} must satisfy 0 < low < high <= {MAX_TRAIN_SIGMA}: Direct-Align "
                             "divides by (1 - sigma), and sigma 0 has nothing to recover")
        return rng

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if not self.grid_start_index < self.grid_end_index <= self.grid_schedule_steps:
            raise ValueError("need grid_start_index < grid_end_index <= grid_schedule_steps "
                             f"(got {self.grid_start_index}, {self.grid_end_index}, {self.grid_schedule_steps})")
        needs_words = self.reward_form in TEXT_FORMS
        if needs_words and not self.positive_words:
            raise ValueError(f"reward_form {self.reward_form!r} needs at least one positive control word "
                             "(train.positive_words), or use reward_form 'plain'")
        if self.reward_form in ("srp", "cfg", "weighted") and not self.negative_words:
            raise ValueError(f"reward_form {self.reward_form!r} needs at least one negative control word "
                             "(train.negative_words), or use reward_form 'sgp' or 'plain'")
        if self.inversion and self.reward_form == "plain":
            raise ValueError("the inversion branch needs a reward with control words: with reward_form 'plain' it "
                             "maximises the denoise branch's reward, and through its opposite step the two gradients "
                             "nearly cancel; use reward_form 'weighted' (or 'sgp', 'srp', 'cfg') or set inversion: false")
        if self.content_weight > 0 and self.reward_form in ("plain", "image_relative"):
            raise ValueError(f"train.content_weight {self.content_weight} adds the reward on the plain prompt to a "
                             f"relative form, but reward_form is {self.reward_form!r}, which has " +
                             ("no other term: it is the plain reward already" if self.reward_form == "plain" else
                              "no prompt (an image-only reward)") + ": set content_weight 0")
        if self.inversion and not self.negative_words and self.reward_form != "image_relative":
            raise ValueError("the inversion branch is trained towards the negative words: give "
                             "train.negative_words or set inversion: false")
        if self.fuse_branches and not self.inversion:
            raise ValueError("fuse_branches batches the denoise and inversion branches together, but inversion is "
                             "false: set fuse_branches: false (one branch has nothing to fuse) or inversion: true")
        training_levels(self)  # every level inside (0, MAX_TRAIN_SIGMA]; the method's row checks its model step
        return self


def check_checkpointing(train: TrainConfig) -> None:
    """Refuse ``checkpoint_every`` without ``checkpoint_dir`` (the one place checkpoints are configured).

    Pipelines call it before any step runs; the trainer calls it too, for runs that start there."""
    if train.checkpoint_every and not train.checkpoint_dir:
        raise ValueError(f"train.checkpoint_every is {train.checkpoint_every} but train.checkpoint_dir is not set: "
                         "give a folder every process can reach, or set checkpoint_every: 0")


def check_base_quantization(policy: PolicyConfig, train: TrainConfig) -> None:
    """Refuse a quantised base with full fine-tuning (its weights would be trained); pipelines call it first."""
    if policy.base_quantization != "none" and train.finetune != "lora":
        raise ValueError(f"policy.base_quantization = {policy.base_quantization!r} with train.finetune = "
                         f"{train.finetune!r}: quantised base weights cannot be trained; set train.finetune: lora "
                         "or policy.base_quantization: none")


def training_levels(cfg: TrainConfig, step_up: bool = False, step_down: bool = False):
    """The training grid (sigmas, decreasing) and the model step ``d_sigma`` a config implies.

    Raises if a level would leave (0, MAX_TRAIN_SIGMA], or a level plus the model step where the
    method steps from its levels: ``step_up`` (Direct-Align's denoise branch starts ``d_sigma``
    above a level) and ``step_down`` (the inversion branch starts ``d_sigma`` below). The method
    registry's rows say which they do (``Method.steps_from_level``).
    """
    import torch

    from srpo.schedules import default_step_size, training_grid

    if cfg.sigma_range is not None:
        lo, hi = cfg.sigma_range
        grid = torch.linspace(hi, lo, cfg.grid_size)
    else:
        grid = training_grid(cfg.grid_start_index, cfg.grid_end_index, cfg.grid_schedule_steps,
                             cfg.shift, cfg.grid_size)
    d_sigma = cfg.d_sigma if cfg.d_sigma is not None else default_step_size(grid)
    top, bottom = float(grid.max()) + (d_sigma if step_up else 0.0), float(grid.min()) - (d_sigma if step_down else 0.0)
    if top > MAX_TRAIN_SIGMA + 1e-6:
        raise ValueError(f"the highest training level{' plus the model step' if step_up else ''} reaches sigma "
                         f"{top:.4f} (d_sigma "
                         f"{d_sigma:.4f}), above {MAX_TRAIN_SIGMA}: start the grid at lower noise (a larger "
                         "grid_start_index, or a lower sigma_range high end) or use a smaller d_sigma")
    if bottom <= 0.0:
        raise ValueError(f"the lowest training level{' minus the model step' if step_down else ''} reaches sigma "
                         f"{bottom:.4f} (d_sigma "
                         f"{d_sigma:.4f}), not above 0: end the grid at higher noise (a smaller grid_end_index, "
                         "or a higher sigma_range low end) or use a smaller d_sigma")
    return grid, d_sigma
