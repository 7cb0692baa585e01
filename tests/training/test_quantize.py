"""Frozen base weights quantised under LoRA (policy.base_quantization) on a tiny FLUX."""

import pytest
import torch

pytest.importorskip("torchao")

from srpo.config import PolicyConfig, TrainConfig, check_base_quantization  # noqa: E402
from srpo.models.families import load_policy  # noqa: E402
from srpo.models.quantize import check_quantization_device, dense, quantize_linears  # noqa: E402
from srpo.rewards import RewardConfig, load_reward  # noqa: E402
from srpo.training.lora import save_lora  # noqa: E402
from srpo.training.trainer import SRPOTrainer  # noqa: E402

from srpo.config import RolloutConfig  # noqa: E402

ROLLOUT = RolloutConfig(num_steps=4)  # the rollout_cfg fixture's

# Relative L2 error of the base velocity, ||v_q - v|| / ||v||, on the tiny FLUX (random weights):
# measured int8 0.0057, fp8 0.029, nf4 0.13 (see docs/performance.md); the bounds leave 2.5-3.5x room.
TOLERANCE = {"int8": 0.02, "fp8": 0.08, "nf4": 0.3}


@pytest.fixture(scope="module")
def reward():
    return load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))


def quantised_cfg(policy_cfg, kind):
    return policy_cfg.model_copy(update={"base_quantization": kind})


def base_velocity(policy, prompts, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), *policy.latent_shape(32, 32), generator=g)  # [B, C, h, w]
    sigma = torch.full((len(prompts),), 0.6)
    with torch.no_grad():
        return policy.velocity(x, sigma, policy.encode_prompts(prompts), 3.5)


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("kind", ["int8", "fp8", "nf4"])
def test_the_quantised_base_velocity_is_within_tolerance_of_full_precision(policy_cfg, kind):
    full = load_policy(policy_cfg)
    quantised = load_policy(policy_cfg)
    n = quantize_linears(quantised.transformer, kind)
    assert n > 0 and not any(p.requires_grad for p in quantised.transformer.parameters())
    error = relative_error(base_velocity(quantised, ["a red circle", "a cat"]), base_velocity(full, ["a red circle", "a cat"]))
    assert 0 < error < TOLERANCE[kind], error


def make_trainer(policy_cfg, reward, rollouts, kind, **overrides):
    cfg = TrainConfig(**{"steps": 3, "batch_size": 2, "learning_rate": 1e-4, "max_grad_norm": 1.0,
                         "finetune": "lora", "lora_rank": 4, "lora_alpha": 4.0, "method": "direct_align",
                         "inversion": False, "reward_form": "plain", "loss": "linear", "num_injections": 1,
                         **overrides})
    return SRPOTrainer(load_policy(quantised_cfg(policy_cfg, kind)), reward, rollouts, cfg, ROLLOUT)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_an_update_over_a_quantised_base_raises_the_reward_and_trains_only_the_adapter(policy_cfg, reward,
                                                                                      rollouts, kind):
    trainer = make_trainer(policy_cfg, reward, rollouts, kind, learning_rate=1e-2 if kind == "nf4" else 1e-4)
    level = trainer.method.noise_levels(trainer.ctx, 0)[:1]
    trainer.method.noise_levels = lambda ctx, step: level
    prompts, x0, eps = trainer.batches.clean_batch(0)
    base = {n: dense(p.detach()).clone() for n, p in trainer.policy.transformer.named_parameters() if "lora_" not in n}

    def current_reward():
        with torch.no_grad():
            velocity = trainer.policy.velocity_fn(trainer.policy.encode_prompts(prompts), trainer.cfg.guidance)
            x0_hat = trainer.method.recover(trainer.ctx, "denoise", x0, eps, level[0][1], velocity)
            img = trainer.objective.image_features(trainer.policy.decode(x0_hat))
            return trainer.objective.branch_reward("denoise", img, trainer.objective.text_sides(prompts, 0), level[0][1]).mean().item()

    before = current_reward()
    trainer.train_step(0)
    assert current_reward() > before
    named = dict(trainer.policy.transformer.named_parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in trainer.params)
    assert {n for n, p in named.items() if p.requires_grad} == {n for n in named if "lora_" in n}
    for n, before_value in base.items():  # the frozen (quantised) base did not move
        assert torch.equal(dense(named[n].detach()), before_value), n


def test_a_lora_trained_over_an_int8_base_reloads_onto_the_full_precision_base(policy_cfg, reward, rollouts,
                                                                               tmp_path):
    trainer = make_trainer(policy_cfg, reward, rollouts, "int8", learning_rate=3e-2, steps=2)
    trainer.train()
    prompts = ["a red circle", "a black cat"]
    trained = base_velocity(trainer.policy, prompts)
    save_lora(trainer.policy, trainer.policy.transformer, tmp_path / "lora")
    reloaded = load_policy(policy_cfg)  # unquantised
    untouched = base_velocity(reloaded, prompts)
    reloaded.load_lora(tmp_path / "lora")
    again = base_velocity(reloaded, prompts)
    moved = relative_error(trained, untouched)
    assert moved > 3 * TOLERANCE["int8"]  # the adapter changed the velocity by more than the quantisation error
    assert relative_error(again, trained) < TOLERANCE["int8"]


def test_quantised_base_with_full_finetuning_is_refused_at_config_time():
    with pytest.raises(ValueError, match=r"^policy.base_quantization = 'int8' with train.finetune = 'full'"):
        check_base_quantization(PolicyConfig(base_quantization="int8"), TrainConfig(finetune="full"))
    check_base_quantization(PolicyConfig(base_quantization="int8"), TrainConfig(finetune="lora"))


def test_fp8_on_a_gpu_older_than_ada_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match=r"^policy.base_quantization = 'fp8' needs a GPU of compute capability"):
        check_quantization_device("fp8", "cuda")
    check_quantization_device("int8", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_quantization_device("fp8", "cuda")
