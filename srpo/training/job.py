"""A training run as one typed object, validated in one place, trained in this process or written for many.

:class:`TrainingJob` holds everything a run needs besides its rollouts: the policy, reward (or
multi-reward), rollout and train configs, and what the guard reads (held-out prompts, the
evaluation metric configs and extra rewards it may score with). :meth:`TrainingJob.validate` is
THE validation of a run, called by the pipelines at compile time, by :func:`write_job` and by
every process of a launched job before anything loads:

- static (configs only): checkpointing, a quantised base with full fine-tuning, the method row
  (:func:`srpo.training.methods.check_method`: its name, its settings, a score-only reward for a
  gradient method), a reward the form cannot use, the policy family and LoRA rank
  (:func:`srpo.models.checks.check_policy`), control words that do not fit the reward's text;
- with the rollout count: the batch size;
- with a device: the micro-step memory bound (:mod:`srpo.training.sizes`) and the memory plan
  (:func:`srpo.training.fit.check_training_fits`).

A one-process run trains in-process from the objects (:func:`train_job`); a multi-process run
writes the job folder (``job.json`` + ``rollouts/``, :func:`write_job`) that each process reads
(:func:`run_job`, started by the entry point ``python -m ops.train``, which lives above the
evaluation suite and the world because it builds the guard's metric functions).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Optional

import torch
from pydantic import BaseModel, ConfigDict

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig, check_base_quantization, check_checkpointing
from srpo.rewards import RewardConfig
from srpo.rewards.config import IMAGE_ONLY_REWARDS, MultiRewardConfig, check_content_weight, check_trainable
from srpo.rewards.scores import SCORE_REWARD

JOB_FILE = "job.json"
#: ``(job, loaded reward, device) -> {key: MetricFn}``: builds the guard's metric functions (above this layer).
GuardMetrics = Callable[["TrainingJob", Any, str], Mapping[str, Callable]]


#: Score-only rewards (``reward.function``) that judge an edit against its source: they need ``rollouts.edits``.
SOURCE_SCORES = ("shapes-edit",)


def check_edit_run(policy: PolicyConfig, rollout: RolloutConfig, rewards: Optional[MultiRewardConfig],
                   reward: RewardConfig) -> None:
    """Refuse edit data with a text-to-image family, an edit family without edit data, and a reward that compares
    with the source (``against: source | direction``, a source judge) in a run without sources."""
    from srpo.models.checks import transformer_config
    from srpo.models.families import adapter_class

    known = transformer_config(policy.pretrained, policy.family)  # (family, config) without weights, or None
    edits = adapter_class(known[0]).edits_images if known is not None else None  # None: not readable here
    if rollout.edits and edits is False:
        raise ValueError(f"rollouts.edits {rollout.edits!r} with policy.family {known[0]!r}, a text-to-image model: "
                         "use an edit family (flux-kontext, qwen-image-edit, qwen-image-edit-plus) or remove "
                         "rollouts.edits")
    if not rollout.edits and edits:
        raise ValueError(f"rollouts.edits is not set, but policy.family {known[0]!r} ({policy.pretrained}) edits "
                         "images: set rollouts.edits to a folder of (source image, instruction) pairs "
                         "(metadata.jsonl, see srpo.edit_data)")
    if rollout.edits:
        return
    for entry in rewards.rewards if rewards is not None else []:
        if entry.against != "text":
            raise ValueError(f"rewards entry {entry.name or entry.reward.name!r} has against: {entry.against}, which "
                             "compares with each sample's source image, but the run has no sources: set "
                             "rollouts.edits (an edit family) or use against: text")
    if rewards is None and reward.function in SOURCE_SCORES:
        raise ValueError(f"reward.function {reward.function!r} judges an edit against its source, but the run has no "
                         "sources: set rollouts.edits (an edit family) or use another reward")


class TrainingJob(BaseModel):
    """Everything a training run needs besides its rollouts (JSON round trip: ``job.json``)."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyConfig
    reward: RewardConfig  # the training reward, or (with ``rewards``) the one the guard's ``reward`` metric reads
    rollout: RolloutConfig
    train: TrainConfig
    rewards: Optional[MultiRewardConfig] = None  # train against this weighted sum instead
    guard_prompts: list[str] = []  # the held-out prompts train.guard takes its prompts from (when it names none)
    metric_configs: dict[str, dict] = {}  # evaluation MetricConfigs as JSON (the guard's builder validates them)
    extra_rewards: dict[str, RewardConfig] = {}

    @property
    def training_reward(self) -> RewardConfig | MultiRewardConfig:
        return self.rewards or self.reward

    def metric_kinds(self) -> dict:
        """``{key: object with .name}`` of the guard's metric configs: what the memory plan reads."""
        return {k: SimpleNamespace(name=v.get("name")) for k, v in self.metric_configs.items()}

    def validate_run(self, num_rollouts: int | None = None, device: torch.device | None = None) -> "TrainingJob":
        """Refuse a run that cannot work, before any model loads (see the module docstring); returns self."""
        from srpo.models.checks import check_policy
        from srpo.rewards.text_context import check_training_words
        from srpo.training.methods import check_method

        train, reward = self.train, self.reward
        check_checkpointing(train)
        check_base_quantization(self.policy, train)
        check_method(train, self.rollout, score_only=reward.name == SCORE_REWARD and self.rewards is None,
                     reward_label=repr(reward.score_label or reward.name))
        if self.rewards is None:  # with `rewards:`, each entry's form was checked against its reward
            check_trainable(reward, train.reward_form)
        check_content_weight(train.content_weight, multi=self.rewards is not None, label=f"reward {reward.name!r}",
                             prompted=reward.name not in (SCORE_REWARD, *IMAGE_ONLY_REWARDS))
        check_policy(self.policy, train)  # policy.family vs the folder, train.lora_rank vs the layers
        check_edit_run(self.policy, self.rollout, self.rewards, reward)
        check_training_words(reward, train, self.rewards)  # control words fit the reward's text context
        if num_rollouts is not None:
            from srpo.training.sizes import check_batch_size

            check_batch_size(train, num_rollouts)
        if device is not None:
            self.check_memory(device)
        return self

    def check_memory(self, device: torch.device, batch_memory: bool = True) -> None:
        """The memory plan on ``device`` and (``batch_memory``) the micro-step bound, which reads the device."""
        from srpo.training.fit import check_training_fits
        from srpo.training.sizes import check_batch_memory

        if batch_memory:
            check_batch_memory(self.train, self.policy.height, self.policy.width, device)
        check_training_fits(self.policy, self.train, self.training_reward, device, metrics=self.metric_kinds())

    # ---- the job folder -----------------------------------------------------------------
    def write(self, job_dir: str | Path, rollouts: RolloutSet) -> Path:
        """Validate (rollout count; the memory on a CPU, or a GPU named by ``policy.gpu_memory_gb``: the
        processes check their own GPU) and write ``job_dir``; nothing is written if it is refused."""
        from srpo.models.families import resolve_device

        device = resolve_device(self.policy.device)
        self.validate_run(len(rollouts))
        if device.type == "cpu" or self.policy.gpu_memory_gb is not None:  # never touch CUDA in this process
            self.check_memory(device, batch_memory=device.type == "cpu")
        job_dir = Path(job_dir)
        rollouts.save(job_dir / "rollouts")
        (job_dir / JOB_FILE).write_text(self.model_dump_json(indent=1))
        return job_dir

    @classmethod
    def read(cls, job_dir: str | Path) -> tuple["TrainingJob", RolloutSet]:
        job_dir = Path(job_dir)
        return cls.model_validate_json((job_dir / JOB_FILE).read_text()), RolloutSet.load(job_dir / "rollouts")


def write_job(job_dir: str | Path, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
              train: TrainConfig, rollouts: RolloutSet, *, guard_prompts: list[str] | None = None,
              metric_configs: Mapping[str, Any] | None = None, extra_rewards: Mapping[str, RewardConfig] | None = None,
              rewards: MultiRewardConfig | None = None) -> Path:
    """:meth:`TrainingJob.write` from the configs (``metric_configs``: MetricConfigs or their JSON)."""
    metrics = {k: v if isinstance(v, dict) else v.model_dump(mode="json") for k, v in (metric_configs or {}).items()}
    job = TrainingJob(policy=policy, reward=reward, rollout=rollout, train=train, rewards=rewards,
                      guard_prompts=list(guard_prompts or []), metric_configs=metrics,
                      extra_rewards=dict(extra_rewards or {}))
    return job.write(job_dir, rollouts)


def build_guard(job: TrainingJob, reward, accelerator, guard_metrics: GuardMetrics | None):
    """The :class:`~srpo.training.guard.Guard` of ``train.guard``: prompts, seeds, metric functions, rank split."""
    from srpo.training.guard import Guard

    gcfg = job.train.guard
    if guard_metrics is None:
        raise ValueError("train.guard is set but no guard metric builder was given: run the job through "
                         "`python -m ops.train`, or pass guard_metrics (srpo.world.guard_metrics."
                         "build_job_guard_metrics)")
    prompts, seeds = gcfg.prompts_and_seeds(job.guard_prompts)
    gather = None
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        gather = lambda obj: gather_object([obj])  # noqa: E731  (every rank's object, in rank order)
    return Guard(gcfg, guard_metrics(job, reward, str(accelerator.device)), prompts, seeds,
                 rank=accelerator.process_index, world=accelerator.num_processes, gather=gather)


def train_job(job: TrainingJob, rollouts: RolloutSet, out_dir: str | Path, on_step: Callable | None = None,
              guard_metrics: GuardMetrics | None = None, validated: bool = False):
    """Train ``job`` on ``rollouts`` in this process (one of many under accelerate / torchrun, or alone) and
    save into ``out_dir``; returns the trainer. ``validated``: the static checks already ran in this process."""
    from srpo.models.families import load_policy
    from srpo.rewards import load_reward
    from srpo.rewards.combine import load_multi_reward, load_once
    from srpo.training.distributed import make_accelerator
    from srpo.models.families import resolve_device
    from srpo.training.trainer import SRPOTrainer

    train = job.train
    accelerator = make_accelerator(train, cpu=resolve_device(job.policy.device).type == "cpu")
    if validated:
        job.check_memory(accelerator.device)
    else:
        job.validate_run(len(rollouts), accelerator.device)  # before any model is loaded
    # stored conditioning: no text encoder in training, unless the guard must encode its held-out prompts
    policy = load_policy(job.policy, device=accelerator.device,
                         text_encoders=not rollouts.conditioning or train.guard is not None)
    loaded: dict = {}  # reward models by config: one shared by `reward` and `rewards:` is loaded once
    reward = load_once(job.reward, loaded, load_reward, accelerator.device)
    guard = build_guard(job, reward, accelerator, guard_metrics) if train.guard else None
    training_reward = reward
    if job.rewards is not None:  # the training reward is the weighted sum
        training_reward = load_multi_reward(job.rewards, accelerator.device, loaded=loaded)
    trainer = SRPOTrainer(policy, training_reward, rollouts, train, job.rollout, accelerator=accelerator, guard=guard)
    trainer.train(on_step=on_step)
    trainer.save(out_dir)
    return trainer


def run_job(job_dir: str | Path, out_dir: str | Path, on_step: Callable | None = None,
            guard_metrics: GuardMetrics | None = None):
    """Read the job folder ``job_dir`` and :func:`train_job` it (each process of a launched job does this)."""
    job, rollouts = TrainingJob.read(job_dir)
    return train_job(job, rollouts, out_dir, on_step=on_step, guard_metrics=guard_metrics)
