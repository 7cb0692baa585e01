"""The training guard: held-out checks during training, stop rules, and the weights a run publishes.

Every ``GuardConfig.every`` updates (and at update 0, before any, which is the base model), the
trainer calls :meth:`Guard.check` with a callable that renders images for the guard's fixed
prompts and seeds with the current policy (:func:`policy_image_generator`: no grad, eval mode,
noise from explicit generators, so the training's random streams are untouched). The guard scores
them with injected metric functions (``images [N,3,H,W] in [0,1], prompts -> [N]`` or
``{name: [N]}``; built from config by :mod:`srpo.evaluation.guard_metrics` and
:mod:`srpo.world.guard_metrics`), and records each metric with its standard error over the images
(:mod:`srpo.training.guard_stats`). A rule is broken when its metric lies outside the tolerance
around its value at the first check by more than ``margin`` standard errors; consecutive broken
checks (patience) give a decision: ``ok``, ``warn`` or ``stop``. Only stop rules bound what may be
published: a warn rule is logged and recorded, never changes the selection. Rules follow the
steering: a rule on a metric the control words move is off (the world's map of what its words
move, or the rule's ``unless_steered`` words). With a reward and the control words the guard also
records the training objective (:data:`~srpo.config.GUARD_OBJECTIVE`) that ``select: most_progress``
maximises. :class:`CandidateKeeper` keeps the selected weights off the GPU (LoRA: the adapter only).

The statistics are asymmetric: a rule *stops* the run only when confidently broken (outside its
tolerance by more than ``margin`` standard errors), but a check is *published* only when every stop
rule is confidently kept (inside by at least ``margin`` standard errors: the loss's upper confidence
bound within the tolerance). Checks densify where it matters: when a stop rule's loss bound, rising
at ``foresight`` times its latest rate, would pass the tolerance before the next regular check, the
next check comes after half the last interval (down to 1 update), at most ``extra_checks`` x the
regular checks so far at any point of a run (``early_check``: one of them halfway to the first
regular check, so a run that breaks a rule within its first interval has a trend and a trained
candidate). Instead of training on past its tolerances, a run *recovers* (``recoveries`` times):
the first check after the selection that is no longer publishable rewinds training to the
selected weights, restarts the optimizer's moments and multiplies the learning rate by
``recover_lr`` (:meth:`GuardRunner.recover`); only then do the stop rules stop it. Every decision
reads the gathered values and the recorded history only, so it is the same on every rank and
after a resume.

Distributed: each rank renders and scores its :func:`shard` of the prompts; ``gather`` (every
rank's object in rank order, e.g. ``lambda o: accelerate.utils.gather_object([o])``) merges them
so every rank takes the same decision.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TypeVar, Union

import torch

from srpo.config import GUARD_OBJECTIVE, GuardConfig
from srpo.training.guard_stats import Estimate, estimate, sample_sd

log = logging.getLogger(__name__)

T = TypeVar("T")
Scores = Union[torch.Tensor, Mapping[str, torch.Tensor]]
#: ``images [N, 3, H, W] in [0, 1], prompts -> [N]`` or ``{name: [N]}``
MetricFn = Callable[[torch.Tensor, Sequence[str]], Scores]
#: ``prompts, seeds -> images [N, 3, H, W] in [0, 1]``
GenerateFn = Callable[[Sequence[str], Sequence[int]], torch.Tensor]
#: one object per rank, in rank order
GatherFn = Callable[[object], list]

DECISIONS = ("ok", "warn", "stop")


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s contiguous block of ``items`` (block sizes differ by at most one).

    Concatenating every rank's block in rank order gives ``items`` back (:func:`merge_shards`).
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes")
    n = len(items)
    start = rank * (n // world) + min(rank, n % world)
    return list(items[start:start + n // world + (rank < n % world)])


def merge_shards(parts: Sequence[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """Per-rank ``{name: per-image scores}`` in rank order -> one ``{name: scores}`` in prompt order."""
    names = list(parts[0]) if parts else []
    for part in parts:
        if list(part) != names:
            raise ValueError(f"ranks scored different metrics ({list(part)} vs {names}): every rank must use "
                             "the same guard metrics")
    return {name: [v for part in parts for v in part[name]] for name in names}


@dataclass
class GuardCheck:
    """One check: metric means and standard errors, tolerances, the decision and whether it became the selection."""

    step: int  # updates done when the images were rendered (0: the base model)
    values: dict[str, float]  # metric -> mean over the guard's images (NaN-free means)
    bounds: dict[str, tuple[float, float]]  # applied rule's metric -> (low, high) around its first value
    within: dict[str, bool]  # applied rule's metric -> not broken (inside its bounds, or by under margin x se)
    streaks: dict[str, int]  # applied rule's metric -> consecutive broken checks (patience counter)
    decision: str = "ok"  # ok | warn | stop
    reasons: list[str] = field(default_factory=list)
    selected: bool = False  # this check became the current selection: snapshot the weights now
    seconds: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)  # metric -> standard error of its value
    images: dict[str, int] = field(default_factory=dict)  # metric -> images it applied to
    stop_rules: list[str] = field(default_factory=list)  # the applied rules whose action is stop
    steered: list[str] = field(default_factory=list)  # ruled metrics the control words move: rules off
    publishable: dict[str, bool] = field(default_factory=dict)  # applied rule -> inside by >= margin x se
    used: dict[str, float] = field(default_factory=dict)  # applied rule -> (loss + margin x se) / tolerance
    dense: bool = False  # a check between the regular ones (the guard watched a rising loss closely)
    next_check: Optional[int] = None  # the update of the next dense check (None: the regular grid)
    rewind: Optional[int] = None  # a recovery: training goes on from this update's weights at a lower lr
    lr_scale: float = 1.0  # the learning rate's factor after this check (recover_lr ** recoveries so far)

    @property
    def ok(self) -> bool:
        """Every stop rule is confidently kept: the check may be published (warn rules never decide it)."""
        return all(self.publishable[name] for name in self.stop_rules if name in self.publishable)

    def to_json(self) -> dict:
        out = asdict(self)
        out["bounds"] = {k: [_finite_or_none(lo), _finite_or_none(hi)] for k, (lo, hi) in self.bounds.items()}
        out["ok"] = self.ok
        return out

    @classmethod
    def from_json(cls, data: dict) -> "GuardCheck":
        data = {k: v for k, v in data.items() if k != "ok"}
        data["bounds"] = {k: (-math.inf if lo is None else lo, math.inf if hi is None else hi)
                          for k, (lo, hi) in data["bounds"].items()}
        data.setdefault("stop_rules", list(data["within"]))  # older records: every rule decided
        data.setdefault("publishable", dict(data["within"]))  # older records: one test for both
        return cls(**data)


def _finite_or_none(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def _as_named(name: str, scores: Scores) -> dict[str, torch.Tensor]:
    return dict(scores) if isinstance(scores, Mapping) else {name: scores}


class Guard:
    """Runs checks, applies ``cfg.rules`` with patience and tracks ``cfg.select``'s choice.

    ``metrics``: ``{key: MetricFn}``; together they must produce every name in ``cfg.metrics``
    (a function may return a dict of several; one with a ``steered_metrics(words) -> names``
    attribute says which metrics the control words move). ``prompts``/``seeds``: the whole guard
    set (every rank passes the same); ``rank``/``world``/``gather`` split and merge it.
    ``positive_words``/``negative_words``/``objective``: the steering (:meth:`follow`; a trainer's
    guard runner binds its own when not given).
    """

    def __init__(self, cfg: GuardConfig, metrics: Mapping[str, MetricFn], prompts: Sequence[str],
                 seeds: Sequence[int], *, rank: int = 0, world: int = 1, gather: Optional[GatherFn] = None,
                 positive_words: Optional[Sequence[str]] = None, negative_words: Sequence[str] = (),
                 objective: Optional[MetricFn] = None):
        if len(prompts) != len(seeds):
            raise ValueError(f"the guard has {len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
        if not prompts:
            raise ValueError("the guard has no prompts: set train.guard.prompts or pass held-out prompts")
        if world > 1 and gather is None:
            raise ValueError(f"a guard on {world} processes needs a gather function (every rank's object in rank "
                             "order), e.g. lambda o: accelerate.utils.gather_object([o])")
        self.cfg, self.metrics = cfg, dict(metrics)
        self.prompts, self.seeds = list(prompts), [int(s) for s in seeds]
        self.rank, self.world, self.gather = rank, world, gather or (lambda obj: [obj])
        self.history: list[GuardCheck] = []
        self.selected_step: Optional[int] = None
        self.stopped: Optional[str] = None  # the reason of the first stop decision
        self.base_images: dict[str, list[float]] = {}  # metric -> per-image values at the first check
        self.unresolved: dict[str, str] = {}  # rule -> why the base model's images cannot resolve it
        self.words: Optional[tuple[list[str], list[str]]] = None
        self.steered: list[str] = []
        self.objective: Optional[MetricFn] = None
        if positive_words is not None:
            self.follow(positive_words, negative_words, objective)

    # ---- the steering -----------------------------------------------------------------------
    def follow(self, positive_words: Sequence[str], negative_words: Sequence[str] = (),
               objective: Optional[MetricFn] = None) -> list[str]:
        """Take the run's control words: rules on what they move are off; ``objective`` scores progress.

        A rule is off when its ``unless_steered`` names a control word, or when a metric function's
        ``steered_metrics(words)`` (the shapes world's map of what each word moves) names its metric.
        Returns the ruled metrics now off.
        """
        words = [*positive_words, *negative_words]
        moved: set[str] = set()
        for fn in self.metrics.values():
            steered_metrics = getattr(fn, "steered_metrics", None)
            if steered_metrics is not None:
                moved |= set(steered_metrics(words))
        self.words = (list(positive_words), list(negative_words))
        self.steered = [name for name, rule in self.cfg.rules.items() if name in moved or rule.steered_off(words)]
        self.objective = objective
        if self.steered:
            log.info("guard: the control words %s move %s: those rules are off", words, ", ".join(self.steered))
        return self.steered

    def follow_run(self, cfg, reward) -> None:
        """:meth:`follow` a run's ``cfg.positive_words`` / ``negative_words`` with ``reward`` (the training reward:
        one model, or a multi-reward whose first model scores) as the objective; the plain prompt's score for
        reward_form plain or a score-only reward, which read no words."""
        from srpo.rewards.scores import is_score_only

        if reward is not None and not hasattr(reward, "score"):  # a multi-reward: its first model
            reward = next(iter(getattr(reward, "models", [])), None)
        words = ([], []) if cfg.reward_form == "plain" else (list(cfg.positive_words), list(cfg.negative_words))
        scored = ([], []) if reward is None or is_score_only(reward) else words
        self.follow(*words, None if reward is None else steering_objective(reward, *scored))

    # ---- one check ------------------------------------------------------------------------
    def due(self, step: int, total: int) -> bool:
        """Whether a check belongs after ``step`` updates of ``total``: 0, every ``every``, the last, and a
        dense check the last check asked for (:meth:`judge`) while the run's extra checks last."""
        if any(c.step == step for c in self.history):
            return False
        if step % self.cfg.every == 0 or step == total:
            return True
        budget = math.ceil(self.cfg.extra_checks * (step // self.cfg.every + 1))  # x the regular checks so far
        return self._asked_for(step) and sum(c.dense for c in self.history) < budget

    @torch.no_grad()
    def score_images(self, generate_images: GenerateFn) -> dict[str, list[float]]:
        """Render this rank's shard, score it, gather every rank's scores: ``{metric: per-image values}``.

        Every rank renders the same number of images (a shorter shard is padded with a repeat whose
        scores are dropped), so sharded models (FSDP) run the same collectives on every rank.
        """
        prompts = shard(self.prompts, self.rank, self.world)
        seeds = shard(self.seeds, self.rank, self.world)
        kept, pad = len(prompts), -(-len(self.prompts) // self.world) - len(prompts)
        prompts += (prompts[-1:] or self.prompts[:1]) * pad
        seeds += (seeds[-1:] or self.seeds[:1]) * pad
        images = generate_images(prompts, seeds)  # [n, 3, H, W]
        per_image: dict[str, list[float]] = {}
        functions = dict(self.metrics)
        if self.objective is not None:
            functions[GUARD_OBJECTIVE] = self.objective
        names = [*self.cfg.metrics, *([GUARD_OBJECTIVE] if self.objective is not None else [])]
        for key, fn in functions.items():
            for name, values in _as_named(key, fn(images, prompts)).items():
                if name in names:
                    per_image[name] = values.detach().float().cpu().reshape(-1)[:kept].tolist()
        missing = [n for n in self.cfg.metrics if n not in per_image]
        if missing:
            raise ValueError(f"train.guard.metrics names {missing[0]!r}, which none of the guard's metric functions "
                             f"({', '.join(self.metrics)}) produces: build it (srpo.evaluation.guard_metrics) or "
                             "remove it from the metrics")
        return merge_shards(self.gather({n: per_image[n] for n in names}))

    def score(self, generate_images: GenerateFn) -> dict[str, float]:
        """``{metric: mean over the guard's images}`` of the current policy (no check recorded)."""
        return {name: _nanmean(values) for name, values in self.score_images(generate_images).items()}

    def check(self, step: int, generate_images: GenerateFn, total: Optional[int] = None) -> GuardCheck:
        """Score the current policy after ``step`` updates (of ``total``) and apply the rules; records and returns
        the check."""
        start = time.perf_counter()
        per_image = self.score_images(generate_images)
        if not self.history:
            self.base_images = per_image
            self._check_resolution(per_image)
        estimates = {name: estimate(values, self.base_images.get(name)) for name, values in per_image.items()}
        result = self.judge(step, {k: e.value for k, e in estimates.items()}, estimates, total)
        result.seconds = time.perf_counter() - start
        log.info("guard check at update %d: %s -> %s%s", step,
                 ", ".join(f"{k} {e.value:.4g}±{e.se:.2g}" for k, e in estimates.items()),
                 result.decision, f" ({'; '.join(result.reasons)})" if result.reasons else "")
        if result.decision == "warn":
            log.warning("guard: %s", "; ".join(result.reasons))
        return result

    def _check_resolution(self, per_image: Mapping[str, list[float]]) -> None:
        """On the base model's images: warn about every applied rule the set cannot resolve (the config
        check could not tell: a relative tolerance, a metric of unknown range, a shorter held-out split)."""
        for name, rule in self.cfg.rules.items():
            if name in self.steered or name not in per_image:
                continue
            values = [v for v in per_image[name] if not math.isnan(v)]
            problem = self.cfg.resolution_problem(name, rule, len(values), sd=sample_sd(values),
                                                  start=_nanmean(values)) if values else None
            if problem:
                self.unresolved[name] = problem
                log.warning("guard: %s", problem)

    def judge(self, step: int, values: Mapping[str, float], estimates: Optional[Mapping[str, Estimate]] = None,
              total: Optional[int] = None) -> GuardCheck:
        """Apply the rules to ``values`` (metric means after ``step`` updates of ``total``; ``estimates``: with
        their standard errors, else exact); records the check."""
        base = self.history[0].values if self.history else dict(values)
        reference = self._previous()
        previous = reference.streaks if reference is not None else {}
        estimates = estimates or {}
        bounds, within, streaks, reasons, decision = {}, {}, {}, [], "ok"
        stop_rules, publishable, used = [], {}, {}
        margin = self.cfg.margin
        for name, rule in self.cfg.rules.items():
            if name in self.steered:
                continue
            lo, hi = rule.bounds(base[name])
            est = estimates.get(name)
            se = 0.0 if est is None or math.isnan(est.change_se) else est.change_se
            bounds[name] = (lo, hi)
            within[name] = bool(lo - margin * se <= values[name] <= hi + margin * se)  # not confidently broken
            publishable[name] = bool(lo + margin * se <= values[name] <= hi - margin * se)  # confidently kept
            used[name] = _used(values[name], base[name], lo, hi, margin * se)
            streaks[name] = 0 if within[name] else previous.get(name, 0) + 1
            if rule.action == "stop":
                stop_rules.append(name)
            if streaks[name] >= rule.patience:
                reasons.append(f"{name} {values[name]:.4g}±{se:.2g} outside [{lo:.4g}, {hi:.4g}] (start "
                               f"{base[name]:.4g}) by more than {self.cfg.margin:g} se for {streaks[name]} "
                               f"check(s): {rule.action}")
                decision = max(decision, rule.action, key=DECISIONS.index)
        result = GuardCheck(step, dict(values), bounds, within, streaks, decision, reasons,
                            errors={k: e.se for k, e in estimates.items()},
                            images={k: e.n for k, e in estimates.items()},
                            stop_rules=stop_rules, steered=list(self.steered), publishable=publishable, used=used,
                            dense=step % self.cfg.every != 0 and self._asked_for(step), lr_scale=self.lr_scale)
        result.next_check = self._next_dense(result)
        result.selected = self._becomes_selection(result)
        if result.selected:
            self.selected_step = step
        if self._recovers(result, total):
            result.rewind = self.selected_step
            result.lr_scale = self.lr_scale * self.cfg.recover_lr
            result.reasons.append(f"not publishable after the selection: back to update {self.selected_step}'s "
                                  f"weights, learning rate x{result.lr_scale:g} (recovery {self.recoveries + 1} of "
                                  f"{self.cfg.recoveries})")
            result.decision = "warn"  # the run goes on: a recovery replaces a stop
        elif decision == "stop" and self.stopped is None:
            self.stopped = f"update {step}: " + "; ".join(r for r in reasons if r.endswith("stop"))
        self.history.append(result)
        return result

    @property
    def recoveries(self) -> int:
        """Recoveries the run has made (read from the history: the same after a resume)."""
        return sum(c.rewind is not None for c in self.history)

    @property
    def lr_scale(self) -> float:
        """The learning rate's factor now: ``recover_lr`` to the power of the recoveries made."""
        return self.history[-1].lr_scale if self.history else 1.0

    def _recovers(self, check: GuardCheck, total: Optional[int]) -> bool:
        """Whether ``check`` rewinds training: it is not publishable, a trained selection before it is (its
        weights are kept), recoveries are left, and updates are left to train (not the last check)."""
        return (not check.ok and self.cfg.recoveries > self.recoveries and self.cfg.select != "last"
                and self.selected_step is not None and self.selected_step < check.step
                and (total is None or check.step < total))

    def _previous(self) -> Optional[GuardCheck]:
        """The check the next one continues from: the last one, or after a rewind the check whose weights came back
        (dated at the rewind: its streaks and losses are where training starts again)."""
        if not self.history:
            return None
        last = self.history[-1]
        if last.rewind is None:
            return last
        restored = next(c for c in self.history if c.step == last.rewind)
        return replace(restored, step=last.step, next_check=None)

    def _asked_for(self, step: int) -> bool:
        """Whether the last check asked for a dense check by ``step`` (a check off the grid otherwise: the last)."""
        last = self.history[-1] if self.history else None
        return last is not None and last.next_check is not None and step >= last.next_check

    def _next_dense(self, check: GuardCheck) -> Optional[int]:
        """The update of a dense check after ``check``, or ``None`` (the regular grid).

        Dense when the check may be published and a stop rule's loss bound (its ``used`` share of the
        tolerance), extrapolated at ``foresight`` times its rate since the previous check, would pass
        the tolerance before the next regular check: the loss may accelerate (a collapse is sudden),
        so the guard looks closer instead of finding out a whole interval late. The interval halves
        (the first time from ``every``), down to one update.
        """
        if not check.ok or self.cfg.foresight == 0:
            return None
        previous, every = self._previous(), self.cfg.every
        if previous is None:  # the base model's check: the early check, halfway to the first regular one
            step = max(1, every // 2)
            return step if self.cfg.early_check and step < every else None
        ahead = (check.step // every + 1) * every - check.step  # updates to the next regular check

        def crosses(name: str) -> bool:
            rate = (check.used[name] - previous.used.get(name, math.inf)) / max(1, check.step - previous.step)
            return rate > 0 and check.used[name] + self.cfg.foresight * rate * ahead >= 1

        if not any(crosses(name) for name in check.stop_rules if name in check.used):
            return None
        interval = check.step - previous.step if previous.next_check == check.step else every
        step = check.step + max(1, interval // 2)
        return step if step % every else None  # a regular check comes then anyway

    def _becomes_selection(self, check: GuardCheck) -> bool:
        select = self.cfg.select
        if select == "last":
            return True
        if not check.ok:
            return False
        key = {"best_reward_ok": "reward", "most_progress": GUARD_OBJECTIVE}.get(select)
        if key is not None and key not in check.values:
            if select == "most_progress" and not self.history:
                log.warning("guard: select most_progress without a training objective (no reward or control "
                            "words were given to the guard): publishing the last check within every stop rule")
            key = None
        if key is None:  # last_ok
            return True
        best = self.selected()
        return best is None or check.values[key] > best.values.get(key, -math.inf)

    # ---- results --------------------------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        return self.stopped is not None

    def needs_snapshot(self, check: GuardCheck) -> bool:
        """Keep the current weights now: ``check`` became the selection and the selection is not simply the last."""
        return check.selected and self.cfg.select != "last"

    def selected(self) -> Optional[GuardCheck]:
        """The check whose weights the run publishes (``None`` before any check qualifies)."""
        return next((c for c in self.history if c.step == self.selected_step), None)

    def scalars(self, check: Optional[GuardCheck] = None) -> dict[str, float]:
        """Flat numbers of a check (default: the last) for trackers and metadata: ``guard/<metric>`` etc."""
        check = check or self.history[-1]
        out = {f"guard/{k}": v for k, v in check.values.items()}
        out.update({f"guard/{k}_se": v for k, v in check.errors.items()})
        out.update({f"guard/{k}_within": float(v) for k, v in check.within.items()})
        out.update({f"guard/{k}_used": float(v) for k, v in check.used.items()})
        out.update({"guard/ok": float(check.ok), "guard/decision": float(DECISIONS.index(check.decision)),
                    "guard/selected_update": float(-1 if self.selected_step is None else self.selected_step),
                    "guard/seconds": check.seconds})
        return out

    def summary(self) -> dict:
        """The run's metadata: every check, why it stopped, which update was selected, which rules were off."""
        return {"checks": [c.to_json() for c in self.history], "stopped": self.stopped,
                "selected_update": self.selected_step, "select": self.cfg.select, "margin": self.cfg.margin,
                "dense_checks": [c.step for c in self.history if c.dense],
                "recoveries": [{"at": c.step, "to": c.rewind, "lr_scale": c.lr_scale}
                               for c in self.history if c.rewind is not None],
                "steered": list(self.steered), "unresolved": dict(self.unresolved),
                "seconds": sum(c.seconds for c in self.history)}

    # ---- resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-serialisable state: history (patience counters live in its last check), selection, stop,
        the base model's per-image values (the drifts' paired errors)."""
        return {"history": [c.to_json() for c in self.history], "selected_step": self.selected_step,
                "stopped": self.stopped, "prompts": self.prompts, "seeds": self.seeds,
                "base_images": self.base_images, "unresolved": self.unresolved}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from :meth:`state_dict` (refuses another prompt set: the curves would not compare)."""
        if list(state["prompts"]) != self.prompts or [int(s) for s in state["seeds"]] != self.seeds:
            raise ValueError("the guard state in the checkpoint was made with other prompts or seeds: resume with "
                             "the same train.guard settings, or start a fresh checkpoint_dir")
        self.history = [GuardCheck.from_json(c) for c in state["history"]]
        self.selected_step, self.stopped = state["selected_step"], state["stopped"]
        self.base_images = {k: list(v) for k, v in state.get("base_images", {}).items()}
        self.unresolved = dict(state.get("unresolved", {}))


def steering_objective(reward, positive_words: Sequence[str], negative_words: Sequence[str] = ()) -> MetricFn:
    """The training objective on guard images: ``reward`` towards the positive words, minus towards the negative.

    ``mean_w r(x, "w. p") - mean_v r(x, "v. p")`` (the SRP reward, averaged over the words); the plain
    ``r(x, p)`` without words. Higher is more of what training asks for.
    """
    from srpo.srp import with_control

    def scores(images: torch.Tensor, prompts: Sequence[str], words: Sequence[str]) -> torch.Tensor:
        images = images.to(getattr(reward, "device", images.device))
        return torch.stack([reward.score(images, with_control(w, prompts)).float().cpu() for w in words]).mean(0)

    @torch.no_grad()
    def objective(images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        out = scores(images, prompts, list(positive_words) or [""])  # [N]
        return out - scores(images, prompts, negative_words) if negative_words else out

    return objective


def _used(value: float, start: float, lo: float, hi: float, slack: float) -> float:
    """The share of the tolerance ``[lo, hi]`` around ``start`` that ``value`` uses, ``slack`` (margin x se)
    added on its side: at most 1 when the check is confidently within, above 1 past the publishable bound."""
    shares = []
    for edge, distance in ((lo, start - value), (hi, value - start)):
        if math.isfinite(edge):
            width = abs(edge - start)
            shares.append((distance + slack) / width if width > 0 else (math.inf if distance + slack > 0 else 0.0))
    return max(shares, default=0.0)


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]  # NaN: the metric does not apply to that image
    return sum(kept) / len(kept) if kept else math.nan


# ---- rendering the guard's images -------------------------------------------------------------
def policy_image_generator(policy, height: int, width: int, num_steps: int, shift: float, guidance: float,
                           batch_size: int = 4) -> GenerateFn:
    """``(prompts, seeds) -> images [N, 3, H, W]`` with ``policy``'s current weights.

    No grad, the model in eval mode for the rollout (its mode restored), and noise from one
    explicitly seeded CPU generator per seed: torch's global and CUDA random states are not drawn.
    """
    from srpo.training.rollouts import prompt_noise

    @torch.no_grad()
    def generate(prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        eps = prompt_noise(policy, height, width, seeds)  # [N, C, h, w]
        images = []
        for i in range(0, len(prompts), batch_size):
            cond = policy.encode_prompts(list(prompts[i:i + batch_size]))
            x0 = policy.rollout(cond, eps[i:i + batch_size], num_steps, shift, guidance)
            images.append(policy.decode(x0).float().cpu())  # [b, 3, H, W]
        return torch.cat(images)

    return generate


# ---- keeping the selected weights -------------------------------------------------------------
class CandidateKeeper:
    """The trainable state of the current selection, off the GPU.

    :meth:`keep` copies ``state`` (the trainer's ``trainable_state()``: LoRA's adapter only, or
    the full transformer) to CPU memory, or with ``folder`` writes it there as safetensors (full
    fine-tuning of a large model: no second copy in any memory). :meth:`restore` loads it into the
    module at the end; :meth:`save`/:meth:`load` carry it through a checkpoint.
    """

    FILE = "guard_candidate.safetensors"

    def __init__(self, folder: Optional[str | Path] = None):
        self.folder = Path(folder) if folder else None
        self.step: Optional[int] = None
        self._state: Optional[dict[str, torch.Tensor]] = None

    def keep(self, step: int, state: Mapping[str, torch.Tensor]) -> None:
        """Hold ``state`` (copied to the CPU, or written to the folder) as update ``step``'s weights."""
        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.save(self.folder / self.FILE, cpu)
            cpu = None
        self._state, self.step = cpu, step

    def state(self) -> dict[str, torch.Tensor]:
        """The kept tensors (read back from the folder when kept there)."""
        if self.step is None:
            raise RuntimeError("no candidate kept: call keep() when a guard check becomes the selection")
        if self._state is not None:
            return self._state
        from safetensors.torch import load_file

        return load_file(str(self.folder / self.FILE))

    def restore(self, module: torch.nn.Module) -> int:
        """Load the kept weights into ``module`` (names as in its state dict); returns the kept update."""
        state = self.state()
        own = module.state_dict()
        stray = [k for k in state if k not in own]
        if stray:
            raise ValueError(f"the kept guard candidate has {len(stray)} tensors the module lacks (e.g. {stray[0]!r}): "
                             "restore into the module whose trainable_state() was kept")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device, own[name].dtype))
        return int(self.step)

    def save(self, path: str | Path, state: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        """Write the kept weights (or ``state``) as safetensors, atomically (a temporary name, then a rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file(dict(state if state is not None else self.state()), str(tmp))
        tmp.replace(path)

    def load(self, path: str | Path, step: int) -> None:
        """Take update ``step``'s weights from a file written by :meth:`save` (a resumed run)."""
        from safetensors.torch import load_file

        self.keep(step, load_file(str(path)))


# ---- what the trainer holds -------------------------------------------------------------------
class GuardRunner:
    """The guard, its renderer and its kept candidate, behind the few calls a training loop makes.

    ``maybe_check(step, total, trainable_state)`` after each update (and with ``step`` 0 before the
    first): runs a due check and, when it becomes the selection, keeps ``trainable_state()`` (called
    on every rank: FSDP gathers there; only ``is_main`` keeps it); ``recover(check, ...)`` carries out a
    check's rewind (the kept weights back, a lower learning rate). ``finish(module, step)`` loads the
    selected weights into ``module`` when they are not the current ones. ``state_dict`` /
    ``load_state_dict`` / ``save_candidate`` / ``load_candidate`` carry it through a checkpoint.
    """

    CANDIDATE_FILE = CandidateKeeper.FILE

    def __init__(self, guard: Guard, generate_images: GenerateFn, keeper: Optional[CandidateKeeper] = None,
                 is_main: bool = True):
        self.guard, self.generate = guard, generate_images
        self.keeper = keeper or CandidateKeeper(guard.cfg.snapshot_dir)
        self.is_main = is_main

    @classmethod
    def for_run(cls, guard: Guard, policy, rollouts, cfg, rollout_cfg, reward, processes) -> "GuardRunner":
        """The runner a training run holds: it renders the held-out prompts with the current policy as the
        rollouts do (``guard.num_steps`` / ``guidance`` where set) and follows the run's control words.

        Under FSDP only the main process holds a kept candidate (the gathered state lives there);
        otherwise every process keeps its own copy (with ``snapshot_dir``, in a folder of its own under it).
        """
        gcfg = guard.cfg
        if guard.words is None:  # the run's words: rules on what they steer are off; the held-out objective
            guard.follow_run(cfg, reward)
        render = policy_image_generator(policy, rollouts.height, rollouts.width, gcfg.num_steps or rollout_cfg.num_steps,
                                        rollout_cfg.shift,
                                        rollout_cfg.guidance if gcfg.guidance is None else gcfg.guidance,
                                        gcfg.batch_size)
        folder = gcfg.snapshot_dir
        if folder and processes.world > 1 and not processes.sharded:
            folder = str(Path(folder) / f"rank-{processes.rank}")
        return cls(guard, render, CandidateKeeper(folder), is_main=processes.is_main or not processes.sharded)

    def maybe_check(self, step: int, total: int,
                    trainable_state: Callable[[], Mapping[str, torch.Tensor]]) -> Optional[GuardCheck]:
        """The check after ``step`` updates of ``total`` when one is due (else ``None``); keeps a new selection."""
        if not self.guard.due(step, total):
            return None
        check = self.guard.check(step, self.generate, total)
        if self.guard.needs_snapshot(check):
            state = trainable_state()
            if self.is_main:
                self.keeper.keep(step, state)
        return check

    def recover(self, check: GuardCheck, load_state: Callable[[Mapping[str, torch.Tensor]], object],
                optimizer) -> None:
        """Carry out ``check``'s rewind: the kept weights back into the model, AdamW's moments restarted (they point
        along the path that left the tolerances) and every group's learning rate times ``recover_lr``.

        Every rank calls this (``load_state`` as in :meth:`finish`); the optimizer's learning rates and (empty)
        state are saved by the next checkpoint, so a resumed run continues at the lowered rate.
        """
        if self.is_main and self.keeper.step != check.rewind:
            raise RuntimeError(f"the guard rewinds to update {check.rewind} but holds update {self.keeper.step}'s "
                               "weights: keep them when a check becomes the selection (maybe_check)")
        load_state(self.keeper.state() if self.is_main else {})
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
        inner.state.clear()
        for group in inner.param_groups:
            group["lr"] *= self.guard.cfg.recover_lr
        log.warning("guard: update %d is not publishable; training goes on from update %d's weights at x%g the "
                    "learning rate", check.step, check.rewind, check.lr_scale)

    @property
    def should_stop(self) -> bool:
        return self.guard.should_stop

    def finish(self, load_state: Callable[[Mapping[str, torch.Tensor]], object], step: int) -> Optional[int]:
        """Put the selected candidate back (the weights are those after ``step`` updates now); the update published.

        ``load_state(tensors)`` loads trained tensors into the model; every rank calls this (under
        FSDP the main process passes the candidate, the others an empty dict). ``None`` when no
        check qualified (the final weights stay, with a warning).
        """
        chosen = self.guard.selected_step
        if chosen is None:
            log.warning("guard: no check was within every stop rule; publishing the final weights")
            return None
        if chosen != step:
            if self.is_main and self.keeper.step != chosen:
                raise RuntimeError(f"the guard selected update {chosen} but holds update {self.keeper.step}'s "
                                   "weights: keep them when a check becomes the selection (maybe_check)")
            load_state(self.keeper.state() if self.is_main else {})
            log.info("guard: publishing the weights of update %d (training ran to %d)", chosen, step)
        return chosen

    def state_dict(self) -> dict:
        return {"guard": self.guard.state_dict(), "candidate_step": self.keeper.step}

    def load_state_dict(self, state: Mapping, candidate_file: Optional[str | Path] = None) -> None:
        """Resume the guard; ``candidate_file``: the checkpoint's saved candidate (main process)."""
        self.guard.load_state_dict(state["guard"])
        step = state.get("candidate_step")
        if step is not None and self.is_main:
            if candidate_file is None or not Path(candidate_file).is_file():
                raise FileNotFoundError(f"the checkpoint's guard kept update {step}'s weights but "
                                        f"{self.CANDIDATE_FILE} is missing: resume from a complete checkpoint")
            self.keeper.load(candidate_file, step)

    def save_candidate(self, path: str | Path) -> None:
        """Write the kept candidate (a checkpoint file writer; only when ``keeper.step`` is set)."""
        self.keeper.save(path)
