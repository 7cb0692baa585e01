"""The trainer on a tiny FLUX and a tiny CLIP reward: exact step counts, descent (every family), determinism."""

import json
import math

import pytest
import torch

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.training.trainer import NonFiniteError, SRPOTrainer

ROLLOUT = RolloutConfig(num_steps=4)  # the same as the rollout_cfg fixture


@pytest.fixture(scope="module")
def reward():
    return load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))


def make_trainer(policy_cfg, reward, rollouts, **overrides):
    cfg = TrainConfig(**{"steps": 3, "batch_size": 2, "learning_rate": 1e-3, "max_grad_norm": 1.0,
                         "num_injections": 2, "discount": "linear", **overrides})
    return SRPOTrainer(load_policy(policy_cfg), reward, rollouts, cfg, ROLLOUT)


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.policy.transformer.state_dict().items()}


def test_runs_exactly_the_configured_number_of_updates(policy_cfg, reward, rollouts):
    trainer = make_trainer(policy_cfg, reward, rollouts, steps=3)
    before = weights(trainer)
    vae_before = {k: v.clone() for k, v in trainer.policy.pipe.vae.state_dict().items()}
    history = trainer.train()
    assert [h.step for h in history] == [0, 1, 2]
    state = trainer.optimizer.state[trainer.params[0]]
    assert int(state["step"]) == 3
    assert any(not torch.equal(before[k], v) for k, v in weights(trainer).items())
    assert all(torch.equal(vae_before[k], v) for k, v in trainer.policy.pipe.vae.state_dict().items())
    assert all(p.grad is None for p in reward.parameters())
    assert all(h.inversion_reward is not None and len(h.sigmas) == 2 for h in history)


def test_levels_stay_on_the_grid_with_the_step_inside_bounds(policy_cfg, reward, rollouts):
    trainer = make_trainer(policy_cfg, reward, rollouts)
    for step in range(20):
        for idx, t, w in trainer.method.noise_levels(trainer.ctx, step):
            assert trainer.grid[idx] == pytest.approx(t)
            assert 0 < t - trainer.d_sigma and t + trainer.d_sigma <= 0.99
            assert 0.3 - 1e-6 <= w <= 1.0


def test_k_is_indexed_from_the_clean_end_of_the_grid_like_the_authors(policy_cfg, reward, rollouts):
    """HPS: the denoise k runs 0.10 (latest level) -> 0.25 (earliest), the inversion k' 0.30 -> 0.01."""
    trainer = make_trainer(policy_cfg, reward, rollouts)  # reward_form weighted, the HPS k ranges
    lo, hi = trainer.objective.grid_bounds
    dim = 8
    img = torch.zeros(1, dim)
    img[0, :2] = 1.0  # <img, pos> = <img, neg> = 1: the weighted reward is scale * k
    txt = {"plain": torch.zeros(1, dim), "pos": torch.eye(dim)[:1], "neg": torch.eye(dim)[1:2]}

    def k(branch, t):
        return float(trainer.objective.branch_reward(branch, img, txt, t)) / trainer.objective.reward.scale

    assert k("denoise", hi) == pytest.approx(0.25) and k("denoise", lo) == pytest.approx(0.10)
    assert k("denoise", (lo + hi) / 2) == pytest.approx(0.175)
    # the inversion branch's k is read where its step starts, d_sigma below the level
    assert k("inversion", lo + trainer.d_sigma) == pytest.approx(0.30)
    assert k("inversion", hi + trainer.d_sigma) == pytest.approx(0.01)
    assert k("inversion", hi) > 0.01


def test_same_seed_same_weights_different_seed_different_weights(policy_cfg, reward, rollouts):
    a = make_trainer(policy_cfg, reward, rollouts, steps=2)
    b = make_trainer(policy_cfg, reward, rollouts, steps=2)
    c = make_trainer(policy_cfg, reward, rollouts, steps=2, seed=1)
    for t in (a, b, c):
        t.train()
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


FAMILIES = ["qwen-image", "sd3", "flux2", "flux2-klein", "z-image"]  # besides FLUX.1 (tests/conftest.py's family_dirs)


@pytest.mark.parametrize("method, family", [("direct_align", "flux"), ("refl", "flux"),
                                            *[("direct_align", f) for f in FAMILIES]])
def test_one_update_increases_the_reward_it_followed(family_setups, reward, method, family):
    """First-order check of the whole chain's sign, for every family: VAE, reward and transformer gradients."""
    policy_cfg, rollouts = family_setups(family)
    trainer = make_trainer(policy_cfg, reward, rollouts, method=method, inversion=False, reward_form="plain",
                           loss="linear", learning_rate=1e-4, discount="none", num_injections=1)
    level = trainer.method.noise_levels(trainer.ctx, 0)[:1]
    trainer.method.noise_levels = lambda ctx, step: level
    prompts, x0, eps = trainer.batches.clean_batch(0)

    def current_reward():
        with torch.no_grad():
            velocity = trainer.policy.velocity_fn(trainer.policy.encode_prompts(prompts), trainer.cfg.guidance)
            x0_hat = trainer.method.recover(trainer.ctx, "denoise", x0, eps, level[0][1], velocity)
            txt = trainer.objective.text_sides(prompts, 0)
            img = trainer.objective.image_features(trainer.policy.decode(x0_hat))
            return trainer.objective.branch_reward("denoise", img, txt, level[0][1]).mean().item()

    before = current_reward()
    log = trainer.train_step(0)
    assert log.reward == pytest.approx(before, abs=1e-5)
    assert current_reward() > before


def test_offline_mode_trains_on_stored_latents_with_fresh_noise(policy_cfg, reward, rollouts):
    offline = RolloutSet(rollouts.prompts, rollouts.x0, rollouts.eps, "offline", 32, 32)
    trainer = make_trainer(policy_cfg, reward, offline, steps=2)
    _, x0, eps = trainer.batches.clean_batch(0)
    idx = trainer.batches.indices(0)
    assert torch.equal(x0, offline.x0[idx]) and not torch.equal(eps, offline.eps[idx])
    assert len(trainer.train()) == 2


def test_online_mode_rolls_out_afresh_after_the_first_update(policy_cfg, reward, rollouts):
    trainer = make_trainer(policy_cfg, reward, rollouts)
    _, x0_first, _ = trainer.batches.clean_batch(0)
    assert torch.equal(x0_first, rollouts.x0[trainer.batches.indices(0)])
    _, x0_next, eps_next = trainer.batches.clean_batch(1)
    assert not torch.equal(eps_next, rollouts.eps[trainer.batches.indices(1)])
    cond = trainer.policy.encode_prompts([rollouts.prompts[i] for i in trainer.batches.indices(1)])
    assert torch.allclose(x0_next, trainer.policy.rollout(cond, eps_next, ROLLOUT.num_steps, ROLLOUT.shift,
                                                          ROLLOUT.guidance))


def test_online_rollouts_run_the_policy_without_lora_dropout(policy_cfg, reward, rollouts):
    trainer = make_trainer(policy_cfg, reward, rollouts, finetune="lora", lora_dropout=0.5)
    trainer.train_step(0)  # leaves the transformer in training mode, dropout active
    assert trainer.policy.transformer.training
    _, first, _ = trainer.batches.clean_batch(1)
    _, again, _ = trainer.batches.clean_batch(1)
    assert torch.equal(first, again)  # deterministic: the ODE of the current weights
    assert trainer.policy.transformer.training  # the rollout restored the mode: updates train with dropout


def test_batches_cover_every_prompt_once_per_epoch(policy_cfg, reward, rollouts):
    trainer = make_trainer(policy_cfg, reward, rollouts, batch_size=2)
    epoch = torch.cat([trainer.batches.indices(0), trainer.batches.indices(1)])
    assert sorted(epoch.tolist()) == [0, 1, 2, 3]


def test_non_finite_rewards_skip_updates_then_stop(policy_cfg, reward, rollouts):
    trainer = make_trainer(policy_cfg, reward, rollouts, steps=10, max_bad_steps=3)
    trainer.objective.branch_reward = lambda *a, **k: torch.full((2,), math.nan, requires_grad=True)
    before = weights(trainer)
    with pytest.raises(NonFiniteError, match="3 updates in a row"):
        trainer.train()
    assert trainer.skipped == 3
    assert all(torch.equal(before[k], v) for k, v in weights(trainer).items())


def test_save_writes_a_diffusers_transformer_and_the_log(policy_cfg, reward, rollouts, tmp_path):
    trainer = make_trainer(policy_cfg, reward, rollouts, steps=1)
    trainer.train()
    out = trainer.save(tmp_path / "tuned")
    assert list(out.glob("*.safetensors")) and (out / "config.json").exists()
    log = json.loads((out / "training_log.json").read_text())
    assert len(log["history"]) == 1 and log["config"]["steps"] == 1
    reloaded = load_policy(PolicyConfig(pretrained=policy_cfg.pretrained, height=32, width=32, device="cpu"),
                           transformer=str(out))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.transformer.parameters(),
                                                 trainer.policy.transformer.parameters()))


def test_empty_rollout_set_is_refused(policy_cfg, reward):
    empty = RolloutSet([], torch.zeros(0, 4, 4, 4), torch.zeros(0, 4, 4, 4), "online", 32, 32)
    with pytest.raises(ValueError, match="empty"):
        SRPOTrainer(load_policy(policy_cfg), reward, empty, TrainConfig(), ROLLOUT)


@pytest.mark.parametrize("method, extra", [("draft_lv", {"num_injections": 2}), ("draft", {"draft_steps": 4}),
                                           ("draft", {"draft_steps": 1})])
def test_draft_baselines_share_the_update_path(policy_cfg, reward, rollouts, method, extra):
    trainer = make_trainer(policy_cfg, reward, rollouts, method=method, inversion=False, steps=1, **extra)
    before = weights(trainer)
    (log,) = trainer.train()
    assert math.isfinite(log.reward) and log.grad_norm > 0
    assert any(not torch.equal(before[k], v) for k, v in weights(trainer).items())
    if method == "draft_lv":
        assert log.sigmas == [pytest.approx(float(trainer.ctx.sampler_sigmas[-2]))] * 2


def test_draft_steps_beyond_the_rollout_are_refused(policy_cfg, reward, rollouts):
    with pytest.raises(ValueError, match="full chain"):
        make_trainer(policy_cfg, reward, rollouts, method="draft", inversion=False, draft_steps=5)


def test_fused_branches_take_half_the_model_calls_and_give_the_same_update(policy_cfg, reward, rollouts):
    apart = make_trainer(policy_cfg, reward, rollouts, steps=2, num_injections=2)
    fused = make_trainer(policy_cfg, reward, rollouts, steps=2, num_injections=2, fuse_branches=True)
    batches = {"apart": [], "fused": []}
    for name, trainer in (("apart", apart), ("fused", fused)):
        trainer.policy.transformer.register_forward_pre_hook(
            lambda module, args, kwargs, name=name: batches[name].append(kwargs["hidden_states"].shape[0]),
            with_kwargs=True)
    logs_apart, logs_fused = apart.train(), fused.train()
    # step 0 trains on the stored rollouts; step 1 first rolls out afresh (4 sampler steps, batch 2)
    assert batches["apart"] == [2] * 4 + [2] * 4 + [2] * 4
    assert batches["fused"] == [4] * 2 + [2] * 4 + [4] * 2
    for a, b in zip(logs_apart, logs_fused):
        assert b.reward == pytest.approx(a.reward, abs=1e-5)
        assert b.inversion_reward == pytest.approx(a.inversion_reward, abs=1e-5)
        assert b.loss == pytest.approx(a.loss, abs=1e-5) and b.grad_norm == pytest.approx(a.grad_norm, rel=1e-4)
    # the last update's clipped gradient: the same sums in another order (largest entry ~1e-3)
    grad_apart, grad_fused = (torch.cat([p.grad.flatten() for p in t.params]) for t in (apart, fused))
    assert float((grad_apart - grad_fused).abs().max()) <= 1e-7 < float(grad_apart.abs().max())
    # Adam divides by sqrt(v): entries whose gradient is near its eps turn rounding into a few
    # 1e-6 of weight (lr 1e-3); a swapped or missing branch moves them by ~lr
    a, b = weights(apart), weights(fused)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 5e-5


def test_vae_gradient_checkpointing_changes_memory_not_results(policy_cfg, reward, rollouts):
    plain = make_trainer(policy_cfg, reward, rollouts, steps=1)
    checkpointed = make_trainer(policy_cfg, reward, rollouts, steps=1, vae_gradient_checkpointing=True)
    plain.train()
    checkpointed.train()
    assert checkpointed.policy.pipe.vae.decoder.gradient_checkpointing
    a, b = weights(plain), weights(checkpointed)
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    assert not torch.is_anomaly_enabled()


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_compiled_blocks_train_like_eager_ones(policy_cfg, reward, rollouts, finetune):
    # aot_eager traces the blocks through dynamo and AOT autograd, as inductor does, without
    # generating C++ (inductor on this CPU: same weights within 1e-7, 45 s of compilation).
    compiled_cfg = policy_cfg.model_copy(update={"compile": True, "compile_backend": "aot_eager",
                                                 "gradient_checkpointing": True})
    eager = make_trainer(policy_cfg, reward, rollouts, steps=1, finetune=finetune)
    compiled = make_trainer(compiled_cfg, reward, rollouts, steps=1, finetune=finetune)
    blocks = [m for m in compiled.policy.transformer.modules()
              if type(m).__name__ in compiled.policy.transformer._repeated_blocks]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
    before = weights(compiled)
    eager.train()
    compiled.train()
    a, b = weights(eager), weights(compiled)
    assert any(not torch.equal(before[k], v) for k, v in b.items())
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # fp32 norm weights, bf16 input
def test_lora_under_bf16_autocast_keeps_the_base_in_bf16_and_trains_the_adapter_in_fp32(policy_cfg, reward,
                                                                                         rollouts):
    def first_gradient(**policy):
        trainer = make_trainer(policy_cfg.model_copy(update={"autocast": "bfloat16", **policy}), reward, rollouts,
                               finetune="lora")
        trainer.train_step(0)
        return trainer, torch.cat([p.grad.flatten() for p in trainer.params])

    lean, grad = first_gradient()
    base = [p for n, p in lean.policy.transformer.named_parameters() if "lora_" not in n]
    assert {p.dtype for p in base} == {torch.bfloat16} and {p.dtype for p in lean.params} == {torch.float32}
    assert lean.policy.pipe.vae.dtype == lean.policy.pipe.text_encoder_2.dtype == torch.bfloat16
    assert all(p.grad is None for p in base) and torch.isfinite(grad).all() and grad.norm() > 0
    # autocast computes in bf16 from fp32 weights as well: storing them in bf16 changes little
    _, grad_fp32_base = first_gradient(frozen_dtype="float32")
    assert torch.nn.functional.cosine_similarity(grad, grad_fp32_base, dim=0) > 0.999


def test_a_bad_streak_stops_the_run_and_keeps_the_last_good_checkpoint(policy_cfg, reward, rollouts, tmp_path):
    cfg = TrainConfig(steps=8, batch_size=2, learning_rate=1e-3, max_grad_norm=1.0, checkpoint_every=1,
                      keep_checkpoints=2, max_bad_steps=2, checkpoint_dir=str(tmp_path))
    trainer = SRPOTrainer(load_policy(policy_cfg), reward, rollouts, cfg, ROLLOUT)
    good_reward = trainer.objective.branch_reward
    trainer.objective.branch_reward = lambda branch, img, txt, t: (
        good_reward(branch, img, txt, t) if len(trainer.history) < 3 else torch.full((2,), math.inf, requires_grad=True))  # hinge: zero loss, yet not finite
    with pytest.raises(NonFiniteError, match="last good checkpoint is kept"):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000002", "step-000003"]
    assert [h.skipped for h in trainer.history] == [False, False, False, True]


def test_log_lines_come_every_log_every_updates_and_after_the_last(policy_cfg, reward, rollouts, caplog):
    trainer = make_trainer(policy_cfg, reward, rollouts, steps=5, log_every=3, batch_size=1, num_injections=1,
                           inversion=False)
    with caplog.at_level("INFO", logger="srpo.training.trainer"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if r.name == "srpo.training.trainer"]
    assert [line.split()[1] for line in lines] == ["1/5", "4/5", "5/5"]
    assert TrainConfig().log_every > 1  # not a line per update by default


def test_the_trainer_hands_the_policy_its_wrapped_module_and_sets_nothing_else(policy_cfg, reward, rollouts):
    policy = load_policy(policy_cfg)
    before = {k: v for k, v in vars(policy).items()}
    trainer = SRPOTrainer(policy, reward, rollouts, TrainConfig(steps=1), ROLLOUT)
    after = vars(policy)
    assert after.keys() == before.keys()
    assert [k for k in after if after[k] is not before[k]] == ["_forward_module"]
    assert policy.forward_module is trainer.processes.module


@pytest.mark.parametrize("family", FAMILIES)
def test_an_srpo_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one(family_setups, reward, family, tmp_path):
    """Every family's state round trip (weights, optimizer, random streams) through a checkpoint; the
    kill -9 of a process before it is tests/training/test_resume_and_scale.py's (SD3) and test_multinode.py's (FLUX.1)."""
    policy_cfg, rollouts = family_setups(family)
    straight = make_trainer(policy_cfg, reward, rollouts, steps=2, num_injections=1)
    before = weights(straight)
    straight.train()
    first = make_trainer(policy_cfg, reward, rollouts, steps=1, num_injections=1, checkpoint_every=1,
                         checkpoint_dir=str(tmp_path))
    first.train()
    resumed = make_trainer(policy_cfg, reward, rollouts, steps=2, num_injections=1, checkpoint_every=1,
                           checkpoint_dir=str(tmp_path))
    resumed.train()
    assert [h.step for h in resumed.history] == [0, 1]
    assert [h.reward for h in resumed.history] == pytest.approx([h.reward for h in straight.history], abs=1e-6)
    a, b = weights(straight), weights(resumed)
    assert any(not torch.equal(before[k], a[k]) for k in a)  # SRPO (both branches) moved the weights
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
