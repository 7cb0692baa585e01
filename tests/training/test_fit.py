"""A run that cannot fit its device is refused from the plan, before any weight loads."""

import importlib
import shutil

import pytest
import torch

from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig
from srpo.training import fit, sizes
from srpo.training.job import run_job, write_job

REWARD = RewardConfig(name="clip", checkpoint="builtin:tiny")


def no_loading(*args, **kwargs):
    raise AssertionError("weights were loaded before the memory plan was checked")


@pytest.fixture
def configs_only(tmp_path, tiny_flux_dir):
    """The tiny FLUX folder with its configs and tokenizers but no weight file."""
    folder = shutil.copytree(tiny_flux_dir, tmp_path / "configs-only")
    removed = [p.unlink() or p for p in folder.rglob("*.safetensors")]
    assert removed
    return folder


def test_a_huge_image_on_the_cpu_is_refused_by_the_rollout_step_before_it_loads_anything(monkeypatch):
    from diffusers import DiffusionPipeline

    step = importlib.import_module("steps.generate_rollouts")  # the module (the package exports the step)

    monkeypatch.setattr(sizes, "device_memory", lambda device: 24 * 2**30)
    monkeypatch.setattr(step, "load_policy", no_loading)
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_loading)
    policy = PolicyConfig(height=65536, width=65536, device="cpu")  # builtin:tiny-flux
    with pytest.raises(fit.PlanError) as err:
        step.generate_rollouts.entrypoint(["a cat", "a dog"], policy, RolloutConfig(num_steps=2))
    first = str(err.value).splitlines()[0]
    assert first.startswith("policy.height x width = 65536x65536: the rollout step plans")
    assert "settings that fit: policy.height and width at most" in first
    assert "inference plan per device" in str(err.value)
    side = int(first.rsplit("at most ", 1)[1])
    fit.check_rollouts_fit(policy.model_copy(update={"height": side, "width": side}), RolloutConfig(), 2)  # passes


def test_a_folder_of_configs_without_weights_is_refused_by_the_plan_not_a_missing_file(monkeypatch, configs_only):
    monkeypatch.setattr(sizes, "device_memory", lambda device: 2**20)  # 1 MiB: nothing fits
    policy = PolicyConfig(pretrained=str(configs_only), height=64, width=64, device="cpu")
    with pytest.raises(fit.PlanError, match=r"^policy.height x width = 64x64: the rollout step plans"):
        fit.check_rollouts_fit(policy, RolloutConfig(), 4)
    with pytest.raises(fit.PlanError, match=r"^policy.height x width = 64x64: the training plan needs"):
        fit.check_training_fits(policy, TrainConfig(), REWARD, torch.device("cpu"))
    gpu = policy.model_copy(update={"gpu_memory_gb": 0.001})  # the explicit override wins over the device
    with pytest.raises(fit.PlanError, match=r"^policy.gpu_memory_gb = 0.001: the training plan"):
        fit.check_training_fits(gpu, TrainConfig(), REWARD, torch.device("cuda"))


def test_the_cpu_budget_is_shared_by_the_processes_of_the_node(monkeypatch, policy_cfg):
    monkeypatch.setattr(sizes, "device_memory", lambda device: 8 * 2**30)
    assert fit.device_budget(policy_cfg, torch.device("cpu"), 4)[0] == 2 * 2**30
    assert fit.device_budget(policy_cfg, torch.device("cuda"), 4)[0] == 8 * 2**30  # one GPU per process
    assert fit.device_budget(policy_cfg.model_copy(update={"gpu_memory_gb": 80}), torch.device("cpu"), 4)[0] == 80e9
    # a config written for 80 GB cards on a card of 8 GiB: the card present is the budget, not the declaration
    budget, where = fit.device_budget(policy_cfg.model_copy(update={"gpu_memory_gb": 80}), torch.device("cuda"), 1)
    assert budget == 8 * 2**30 and "written for policy.gpu_memory_gb = 80" in where
    assert fit.device_budget(policy_cfg.model_copy(update={"gpu_memory_gb": 4}), torch.device("cuda"), 1)[0] == 4e9


def test_every_training_process_refuses_before_loading_a_model(tmp_path, policy_cfg, rollouts, monkeypatch):
    job = write_job(tmp_path / "job", policy_cfg, REWARD, RolloutConfig(num_steps=4), TrainConfig(), rollouts)
    monkeypatch.setattr(sizes, "device_memory", lambda device: 2**20)  # the job's device shrinks after writing
    from diffusers import DiffusionPipeline

    monkeypatch.setattr("srpo.models.families.load_policy", no_loading)
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_loading)  # (the built-in tiny reward has no file)
    with pytest.raises(fit.PlanError, match=r"^policy.height x width = 32x32: the training plan needs .* settings that fit"):
        run_job(job, tmp_path / "out")


def test_the_tiny_runs_fit_a_small_machine(monkeypatch, policy_cfg):
    """Margins: the plan does not refuse the tiny runs the tests and CI make (4 GiB shared by 2 processes)."""
    monkeypatch.setattr(sizes, "device_memory", lambda device: 4 * 2**30)
    fit.check_rollouts_fit(policy_cfg.model_copy(update={"height": 64, "width": 64}), RolloutConfig(), 64)
    fit.check_training_fits(policy_cfg, TrainConfig(batch_size=2, num_processes=2), REWARD, torch.device("cpu"))


def test_a_multinode_launch_on_other_nodes_or_processes_than_the_plan_counts_is_refused():
    from srpo.training.multinode import check_world

    train = TrainConfig(num_processes=8, num_nodes=4, distributed="fsdp")
    check_world(train, 4, 8)
    with pytest.raises(ValueError, match=r"^train.num_nodes = 4 but the job runs on 2 pods"):
        check_world(train, 2, 8)
    with pytest.raises(ValueError, match=r"^train.num_processes = 8 but 4 processes run per node"):
        check_world(train, None, 4)


def test_every_real_config_names_its_hardware_in_its_header_and_its_settings():
    """The plans themselves are checked against this hardware by tests/test_config.py (ops.validate on every file)."""
    from pathlib import Path

    import yaml

    from srpo.published import is_builtin

    real = 0
    for path in sorted(Path("configs").glob("*.yaml")):
        policy = (yaml.safe_load(path.read_text()).get("parameters") or {}).get("policy") or {}
        if is_builtin(policy.get("pretrained", "builtin:tiny-flux")) or policy.get("device") == "cpu":
            continue
        real += 1
        header = [line for line in path.read_text().splitlines() if line.startswith("# Hardware:")]
        assert len(header) == 1 and "GB" in header[0] and "docs/performance.md" in header[0], path
        gb = policy.get("gpu_memory_gb")
        assert gb and f"{gb} GB" in header[0], path
    assert real >= 20


def test_an_object_store_prefix_is_planned_from_its_config_files_alone(monkeypatch, configs_only):
    """``s3://`` and other fsspec URLs: only model_index.json and the components' configs are read (here memory://)."""
    import fsspec

    from srpo.training.memory import remote_configs

    fs = fsspec.filesystem("memory")
    for path in configs_only.rglob("*"):
        if path.is_file():
            fs.pipe(f"/plan-test/{path.relative_to(configs_only)}", path.read_bytes())
    fs.pipe("/plan-test/transformer/diffusion_pytorch_model.safetensors", b"not read")
    local = remote_configs("memory://plan-test")
    assert (local / "transformer" / "config.json").is_file()
    assert not list(local.rglob("*.safetensors"))
    monkeypatch.setattr(sizes, "device_memory", lambda device: 2**20)
    policy = PolicyConfig(pretrained="memory://plan-test", height=64, width=64, device="cpu")
    with pytest.raises(fit.PlanError, match=r"^policy.height x width = 64x64: the rollout step plans"):
        fit.check_rollouts_fit(policy, RolloutConfig(), 4)


def test_the_evaluation_plan_holds_the_published_scoring_models_once_and_no_tiny_one(monkeypatch):
    from srpo.evaluation.config import MetricConfig
    from srpo.training.memory import GUARD_METRIC_PARAMS

    monkeypatch.setattr(sizes, "device_memory", lambda device: 24 * 2**30)
    policy = PolicyConfig(device="cpu")  # builtin:tiny-flux in float32
    bare = fit.check_inference_fits(policy, torch.device("cpu"), 2, 2, decode_batch=2, step="evaluation")
    pick = MetricConfig(name="pickscore", checkpoint="yuvalkirstain/PickScore_v1")
    held = fit.check_inference_fits(policy, torch.device("cpu"), 2, 2, decode_batch=2, step="evaluation",
                                    scorers=[REWARD, pick, pick, MetricConfig(name="imagereward", checkpoint="builtin:tiny")])
    assert held.scorers == GUARD_METRIC_PARAMS["pickscore"] * 4  # one PickScore in fp32; tiny ones weigh nothing
    assert held.total() > bare.total() and "reward and metric models" in held.describe()
    monkeypatch.setattr(sizes, "device_memory", lambda device: 3 * 2**30)  # less than PickScore's 3.9 GB
    with pytest.raises(fit.PlanError, match=r"^policy.height x width = 64x64: the evaluation step plans"):
        fit.check_inference_fits(policy, torch.device("cpu"), 2, 2, decode_batch=2, step="evaluation", scorers=[pick])
