"""The memory plan: meta-device trace vs the measured peak of CPU updates, and ops.validate's refusal."""

import pytest

from srpo.config import PolicyConfig, TrainConfig
from srpo.rewards import RewardConfig
from srpo.training.memory import GB, check_plan_fits, plan_memory

pytest.importorskip("torchao")


@pytest.mark.parametrize("finetune, checkpointing", [("lora", False), ("full", True)])
def test_the_plan_is_within_25_percent_of_the_measured_peak_of_a_cpu_update(finetune, checkpointing):
    from benchmarks.memory_plan import plan_vs_measured

    r = plan_vs_measured(finetune, checkpointing, size=64, quick=True)
    assert 0.75 < r["ratio"] < 1.25, r


def test_quantisation_checkpointing_and_fsdp_shrink_the_plan_where_they_should():
    policy = PolicyConfig(pretrained="black-forest-labs/FLUX.1-dev", family="flux", height=512, width=512,
                          autocast="bfloat16")
    train = TrainConfig(finetune="lora")
    reward = RewardConfig(name="hpsv2.1")
    plain = plan_memory(policy, train, reward)
    assert 11.5e9 < plain.transformer_weights / 2 < 12.5e9  # FLUX.1: ~11.9B weights in bf16 (2 bytes each)
    int8, nf4 = (plan_memory(policy, train, reward, quantization=k) for k in ("int8", "nf4"))
    assert nf4.transformer_weights < int8.transformer_weights < 0.55 * plain.transformer_weights
    assert int8.gradients == plain.gradients and int8.activations == plain.activations
    assert plan_memory(policy, train, reward, checkpointing=True).chosen_activations < 0.2 * plain.activations
    sharded = plan_memory(policy, train, reward, world=4)
    assert sharded.transformer_weights < 0.35 * plain.transformer_weights


def test_a_run_that_cannot_fit_is_refused_with_settings_that_fit():
    policy = PolicyConfig(pretrained="black-forest-labs/FLUX.1-dev", family="flux", height=512, width=512,
                          autocast="bfloat16", gpu_memory_gb=40)
    train = TrainConfig(finetune="lora")
    reward = RewardConfig(name="hpsv2.1")
    plan = plan_memory(policy, train, reward)
    assert plan.total() > 40 * GB
    with pytest.raises(ValueError, match=r"^policy.gpu_memory_gb = 40.0: the run plans .* settings that fit: "
                                         r"policy.gradient_checkpointing: (true|false), policy.base_quantization"):
        check_plan_fits(plan, policy, train, reward)
    check_plan_fits(plan, policy.model_copy(update={"gpu_memory_gb": plan.total() / GB + 1}), train, reward)


def test_ops_validate_prints_the_plan_and_refuses_a_run_that_cannot_fit(capsys):
    from ops.validate import RunConfigError, check_memory_plan

    params = {"policy": PolicyConfig(pretrained="black-forest-labs/FLUX.1-dev", family="flux", height=512, width=512,
                                     autocast="bfloat16", gpu_memory_gb=40),
              "train": TrainConfig(finetune="lora"), "reward": RewardConfig(name="hpsv2.1")}
    with pytest.raises(RunConfigError, match=r"^policy.gpu_memory_gb = 40: the training plan needs"):
        check_memory_plan(params)
    no_hardware = {**params, "policy": params["policy"].model_copy(update={"gpu_memory_gb": None})}
    with pytest.raises(RunConfigError, match=r"^policy.gpu_memory_gb is not set: a real-model config"):
        check_memory_plan(no_hardware)  # a real model names its hardware
    capsys.readouterr()
    check_memory_plan({**params, "policy": params["policy"].model_copy(update={"gpu_memory_gb": 80})})
    assert "memory plan per GPU: flux 512x512, batch 1, lora" in capsys.readouterr().out


def test_every_reward_kind_is_planned_with_its_own_tower_and_forwards():
    from srpo.rewards.config import MultiRewardConfig
    from srpo.rewards.registry import QWEN2_VL_7B, SIGLIP_SO400M, VIT_H_14
    from srpo.training.memory import reward_memory

    per_image = {t.params: t.activation_bytes_per_image / 2 for t in (VIT_H_14, SIGLIP_SO400M, QWEN2_VL_7B)}
    hps, how = reward_memory(RewardConfig(name="hpsv2.1"), 1, 512, 512, 2)
    assert hps == VIT_H_14.params * 2 + per_image[VIT_H_14.params] and how == "ViT-H-14 formula"
    # HPSv3 scores "target. p" and "other. p" for the weighted form: two forwards in the graph
    hps3, how = reward_memory(RewardConfig(name="hpsv3"), 1, 512, 512, 2, "weighted")
    assert hps3 == QWEN2_VL_7B.params * 2 + 2 * per_image[QWEN2_VL_7B.params] and how == "Qwen2-VL-7B formula"
    assert reward_memory(RewardConfig(name="hpsv3"), 1, 512, 512, 2, "sgp")[0] < hps3
    aesthetic, _ = reward_memory(RewardConfig(name="aesthetic_v2.5"), 1, 512, 512, 2, "image_relative")
    assert aesthetic == SIGLIP_SO400M.params * 2 + 2 * per_image[SIGLIP_SO400M.params]  # clean + noised copy
    hps_cfg = {"name": "hpsv2.1", "checkpoint": "s3://m/hps.pt"}
    words = {"positive_words": ["Real"], "negative_words": ["Painting"]}
    multi = MultiRewardConfig(rewards=[{"reward": hps_cfg, **words}, {"reward": hps_cfg, "name": "again", **words},
                                       {"reward": {"name": "pickscore"}, **words}])
    planned, _ = reward_memory(multi, 1, 512, 512, 2)
    # HPS loaded once, PickScore once; three terms' activations held until the backward
    assert planned == 2 * VIT_H_14.params * 2 + 3 * per_image[VIT_H_14.params]


def test_the_guards_metric_models_are_in_the_plan():
    from srpo.config import GuardConfig
    from srpo.evaluation.config import MetricConfig
    from srpo.training.memory import GUARD_METRIC_PARAMS, guard_memory

    guard = GuardConfig(metrics=["reward", "judge", "imagereward", "colourfulness", "world.colours"])
    weights, held = guard_memory(guard, {"judge": MetricConfig(name="pickscore")}, 2)
    assert held == ["judge", "imagereward"]
    assert weights == (GUARD_METRIC_PARAMS["pickscore"] + GUARD_METRIC_PARAMS["imagereward"]) * 2
    policy = PolicyConfig(pretrained="black-forest-labs/FLUX.1-dev", family="flux", height=512, width=512,
                          autocast="bfloat16")
    bare = plan_memory(policy, TrainConfig(finetune="lora"), RewardConfig(name="hpsv2.1"))
    guarded = plan_memory(policy, TrainConfig(finetune="lora", guard=guard), RewardConfig(name="hpsv2.1"),
                          metrics={"judge": MetricConfig(name="pickscore")})
    assert guarded.guard == weights and guarded.total() > bare.total()
    assert "guard metric models" in guarded.describe()


#: Layer-count keys of the families' transformer configs, raised so that every block list has >= 3 identical
#: blocks (SD3.5: its first and last differ).
_LAYER_KEYS = ("num_layers", "num_single_layers", "n_layers")


@pytest.mark.parametrize("name, finetune", [
    *[(name, "lora") for name in ("tiny-flux", "tiny-qwen-image", "tiny-sd3", "tiny-flux2", "tiny-flux2-klein",
                                  "tiny-z-image", "tiny-flux-kontext", "tiny-qwen-image-edit",
                                  "tiny-qwen-image-edit-plus")],
    ("tiny-flux", "full"), ("tiny-qwen-image", "full")])
def test_replaying_repeated_blocks_gives_the_full_traces_numbers(name, finetune, monkeypatch):
    """Every field of the training Trace and the inference peaks equal the block-by-block trace's; blocks were replayed."""
    from dataclasses import replace

    from srpo.training import block_replay, memory

    model = memory.describe_model(f"builtin:{name}")
    model = replace(model, transformer={k: (6 if k in _LAYER_KEYS else v) for k, v in model.transformer.items()})
    policy = PolicyConfig(pretrained=f"builtin:{name}", height=64, width=64)
    train = TrainConfig(finetune=finetune, lora_rank=4)
    counts = []

    class Counting(block_replay.BlockReplay):
        def __exit__(self, *exc):
            counts.append(self.replayed)
            return super().__exit__(*exc)

    monkeypatch.setattr(memory, "BlockReplay", Counting)
    monkeypatch.setattr(memory, "_TRACES", {})  # trace here, not from an earlier test's cache
    monkeypatch.setattr(memory, "_INFERENCE_TRACES", {})
    traces = {}
    for replay in (False, True):
        monkeypatch.setattr(block_replay, "REPLAY", replay)
        counts.clear()
        traces[replay] = (memory.trace_model(model, policy, train, batch=2),
                          memory._inference_trace(model, 2, 64, 64, memory.torch.float32))
        if not replay:
            assert counts == [0, 0]
        elif name == "tiny-z-image":  # each block stores its layer_id: the key never calls two blocks identical
            assert counts == [0, 0]
        else:
            assert len(counts) == 2 and all(c > 0 for c in counts), counts  # the training and the inference trace
    assert traces[True] == traces[False]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_meta_built_lora_adapter_has_the_dtypes_peft_gives_one_built_on_the_cpu(dtype):
    """The plan builds the adapter on meta (no CPU initialisation) and casts it as peft casts a CPU-built one:
    an adapter left in fp32 would trace other activations (qwen_image_edit: 28 GB -> 43 GB)."""
    import torch

    from srpo.training import memory
    from srpo.training.lora import add_lora

    model = memory.describe_model("builtin:tiny-flux")

    def adapter_dtypes(on_meta: bool) -> dict[str, torch.dtype]:
        policy = memory.meta_policy(model)
        policy.transformer.to(getattr(torch, dtype))
        targets = list(policy.lora_targets)
        if on_meta:
            with torch.device("meta"):
                add_lora(policy.transformer, 4, 4, targets)
            memory._adapter_in_base_dtype(policy.transformer)
        else:
            add_lora(policy.transformer, 4, 4, targets)
        return {n: p.dtype for n, p in policy.transformer.named_parameters() if "lora_" in n}

    on_meta = adapter_dtypes(True)
    assert on_meta and on_meta == adapter_dtypes(False)
