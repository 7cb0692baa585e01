"""Batch sizes a run cannot meet are refused before any model is loaded."""

import json
import re

import pytest
import torch

from srpo.config import RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig
from srpo.training import sizes
from srpo.training.job import run_job, write_job

REWARD = RewardConfig(name="clip", checkpoint="builtin:tiny")


def test_a_batch_larger_than_the_rollout_set_is_refused_before_the_job_is_written(tmp_path, policy_cfg, rollouts):
    train = TrainConfig(batch_size=100000)
    with pytest.raises(ValueError, match=rf"^train.batch_size is 100000, more than the {len(rollouts)} rollouts.*"
                                         rf"at most {len(rollouts)}"):
        write_job(tmp_path / "job", policy_cfg, REWARD, RolloutConfig(num_steps=4), train, rollouts)
    assert not (tmp_path / "job").exists()


def test_every_process_refuses_it_before_loading_a_model(tmp_path, policy_cfg, rollouts, monkeypatch):
    job = write_job(tmp_path / "job", policy_cfg, REWARD, RolloutConfig(num_steps=4), TrainConfig(), rollouts)
    spec = json.loads((job / "job.json").read_text())
    spec["train"]["batch_size"] = 100000  # a job written by hand (or by an older version)
    (job / "job.json").write_text(json.dumps(spec))

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the batch size was checked")

    monkeypatch.setattr("srpo.models.families.load_policy", no_loading)
    monkeypatch.setattr("srpo.rewards.load_reward", no_loading)
    with pytest.raises(ValueError, match=r"^train.batch_size is 100000"):
        run_job(job, tmp_path / "out")


def test_a_batch_whose_images_alone_exceed_the_memory_is_refused_and_the_suggested_size_passes(monkeypatch):
    monkeypatch.setattr(sizes, "device_memory", lambda device: 8 * 2**30)
    cpu = torch.device("cpu")
    train = TrainConfig(batch_size=100000, fuse_branches=True)
    with pytest.raises(ValueError, match=r"^train.batch_size is 100000, which needs at least") as err:
        sizes.check_batch_memory(train, 1024, 1024, cpu)
    fits = int(re.search(r"at most (\d+)", str(err.value)).group(1))
    sizes.check_batch_memory(train.model_copy(update={"batch_size": fits}), 1024, 1024, cpu)
    with pytest.raises(ValueError):
        sizes.check_batch_memory(train.model_copy(update={"batch_size": fits + 1}), 1024, 1024, cpu)
    # two CPU processes share the node's RAM; GPU processes each have their own memory
    with pytest.raises(ValueError):
        sizes.check_batch_memory(train.model_copy(update={"batch_size": fits, "num_processes": 2}), 1024, 1024, cpu)


def test_the_shipped_sizes_pass_on_a_small_machine(monkeypatch):
    monkeypatch.setattr(sizes, "device_memory", lambda device: 8 * 2**30)  # less than any GPU or host here
    for batch, side, fused in ((4, 1024, True), (8, 64, True), (1, 720, False)):
        sizes.check_batch_memory(TrainConfig(batch_size=batch, fuse_branches=fused), side, side, torch.device("cpu"))
