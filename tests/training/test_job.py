"""A run is validated once, by its TrainingJob: each refusal before anything loads or is written; one process
trains from the objects; the job folder round-trips."""

import json

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig
from srpo.training.job import JOB_FILE, TrainingJob, train_job

REWARD = RewardConfig(name="clip", checkpoint="builtin:tiny")
ROLLOUT = RolloutConfig(num_steps=4)
SMALL = dict(steps=1, batch_size=2, num_injections=1, inversion=False, reward_form="plain")


def job(policy_cfg, reward=REWARD, **train):
    return TrainingJob(policy=policy_cfg, reward=reward, rollout=ROLLOUT, train=TrainConfig(**train))


def test_checkpoints_asked_for_without_a_folder_are_refused(policy_cfg):
    with pytest.raises(ValueError, match=r"^train.checkpoint_every is 2 but train.checkpoint_dir is not set"):
        job(policy_cfg, checkpoint_every=2).validate_run()


def test_a_batch_larger_than_the_rollout_set_is_refused_and_nothing_is_written(policy_cfg, rollouts, tmp_path):
    with pytest.raises(ValueError, match=rf"^train.batch_size is {len(rollouts) + 1}, more than the"):
        job(policy_cfg, batch_size=len(rollouts) + 1).write(tmp_path / "job", rollouts)
    assert not (tmp_path / "job").exists()


def test_the_method_row_refuses_a_score_only_reward_and_its_own_settings(policy_cfg):
    score = RewardConfig(name="score", function="shapes-bright")
    with pytest.raises(ValueError, match=r"^train.method 'direct_align' backpropagates through the reward, but the "
                                         r"reward 'shapes-bright' is score-only"):
        job(policy_cfg, score, method="direct_align", inversion=False, reward_form="plain").validate_run()
    job(policy_cfg, score, method="grpo", inversion=False, reward_form="plain").validate_run()
    with pytest.raises(ValueError, match=r"^train.draft_steps 5 exceeds the rollout's 4 steps"):
        job(policy_cfg, method="draft", inversion=False, draft_steps=5).validate_run()
    unknown = job(policy_cfg)
    unknown.train = unknown.train.model_copy(update={"method": "ppo"})
    with pytest.raises(ValueError, match=r"^train.method 'ppo' is not a training method"):
        unknown.validate_run()


def test_the_lora_rank_is_checked_by_the_job(policy_cfg):
    with pytest.raises(ValueError, match=r"^train.lora_rank"):
        job(policy_cfg, finetune="lora", lora_rank=100000).validate_run()


def test_the_job_folder_round_trips(policy_cfg, rollouts, tmp_path):
    written = job(policy_cfg, **SMALL).model_copy(update={"guard_prompts": ["a held-out cat"],
                                                          "metric_configs": {"aes": {"name": "aesthetic_v2.5"}}})
    folder = written.write(tmp_path / "job", rollouts)
    again, stored = TrainingJob.read(folder)
    assert again == written and len(stored) == len(rollouts)
    assert json.loads((folder / JOB_FILE).read_text())["train"]["steps"] == 1


def test_one_process_trains_from_the_objects_without_writing_a_job(policy_cfg, rollouts, tmp_path):
    trainer = train_job(job(policy_cfg, **SMALL), rollouts, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not list(tmp_path.rglob(JOB_FILE)) and (tmp_path / "out" / "training_log.json").exists()
    assert len(trainer.history) == 1 and torch.isfinite(torch.tensor(trainer.history[0].loss))


def test_the_entry_point_trains_a_metric_reward_job_in_a_fresh_process(policy_cfg, rollouts, tmp_path):
    """``python -m ops.train`` registers the suite's scorer itself: a ``reward: {name: score, metric: ...}`` job
    (grpo) loads and trains in a process that imported nothing before (as each launched process)."""
    import os
    import subprocess
    import sys

    metric = RewardConfig(name="score", metric={"name": "aesthetic_v2.5", "checkpoint": "builtin:tiny"})
    grpo = dict(method="grpo", inversion=False, reward_form="plain", steps=1, batch_size=1,
                grpo={"group_size": 2, "steps": "first", "num_train_steps": 1})
    folder = job(policy_cfg, metric, **grpo).write(tmp_path / "job", rollouts)
    done = subprocess.run([sys.executable, "-m", "ops.train", str(folder), str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert log["config"]["method"] == "grpo" and len(log["history"]) == 1


def test_a_content_term_is_refused_where_train_does_not_hold_the_reward(policy_cfg):
    """With rewards: the train block's content_weight would be ignored: a plain entry says it instead."""
    from srpo.rewards.config import MultiRewardConfig

    rewards = MultiRewardConfig(rewards=[{"reward": REWARD, "positive_words": ["a"], "negative_words": ["b"]}])
    multi = TrainingJob(policy=policy_cfg, reward=REWARD, rollout=ROLLOUT, rewards=rewards,
                        train=TrainConfig(content_weight=0.5))
    with pytest.raises(ValueError, match=r"^train.content_weight 0.5 adds the reward on the plain prompt, but the "
                                         r"run trains against a rewards: block: add a plain entry"):
        multi.validate_run()
    job(policy_cfg, content_weight=0.5).validate_run()  # one feature reward: the fast path adds it
