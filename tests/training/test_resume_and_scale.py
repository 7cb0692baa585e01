"""Resume after SIGKILL, corrupt checkpoints, LoRA round trips and 2-process equivalence (FLUX.1 and SD3)."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from srpo.config import RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig
from srpo.training import checkpoint as ckpt
from ops.train import ENTRY
from srpo.training.job import run_job, write_job
from srpo.world.guard_metrics import build_job_guard_metrics

ROLLOUT = RolloutConfig(num_steps=4)  # the same as the rollout_cfg fixture
REWARD = RewardConfig(name="clip", checkpoint="builtin:tiny")


def job(tmp_path, name, policy_cfg, rollouts, checkpoint_dir=None, guard_prompts=None, **train):
    cfg = TrainConfig(**{"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "max_grad_norm": 1.0,
                         "num_injections": 2, "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
                         **train})
    return write_job(tmp_path / name, policy_cfg, REWARD, ROLLOUT, cfg, rollouts, guard_prompts=guard_prompts)


#: A guard whose selection is not the last update (the best reward among checks): a 2-process run
#: must render its share of the 3 held-out prompts (one rank pads), gather, and pick the same update.
GUARD = {"every": 1, "num_prompts": 3, "batch_size": 2, "num_steps": 2, "metrics": ["reward", "saturation"],
         "rules": {"saturation": {"drift": 1.0, "action": "warn"}}, "select": "best_reward_ok"}
HELD_OUT = ["a green triangle", "a red circle on white", "a yellow star"]


def transformer_weights(out: Path) -> dict[str, torch.Tensor]:
    merged = {}
    for f in sorted(out.glob("*.safetensors")):
        merged.update(load_file(str(f)))
    return merged


def max_abs_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def launch_cmd(job_dir, out_dir):
    return [sys.executable, "-m", ENTRY, str(job_dir), str(out_dir)]


# SD3: the smallest tiny family, another model class than FLUX.1 (whose kill -9 and resume
# tests/training/test_multinode.py runs across two pods)
@pytest.mark.parametrize("family", ["sd3"])
def test_sigkill_then_the_same_command_finishes_like_an_uninterrupted_run(tmp_path, family_setups, family):
    policy_cfg, rollouts = family_setups(family)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1): the same reductions
    try:  # the uninterrupted reference, in this process: no interpreter to start
        run_job(job(tmp_path, "ref", policy_cfg, rollouts, steps=8), tmp_path / "out-ref")
    finally:
        torch.set_num_threads(threads)

    ck = tmp_path / "checkpoints"
    resumable = job(tmp_path, "resumable", policy_cfg, rollouts, ck, steps=8, checkpoint_every=1, keep_checkpoints=2)
    cmd = launch_cmd(resumable, tmp_path / "out")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while not (ck / "step-000003").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists(), "the run finished before it could be killed"
    # the last K are kept; a kill between publishing a checkpoint and pruning leaves one more
    assert len(list(ck.glob("step-*"))) <= 3

    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stderr
    assert len(list(ck.glob("step-*"))) == 2 and not list(ck.glob(".tmp-*"))
    assert max_abs_diff(transformer_weights(tmp_path / "out"), transformer_weights(tmp_path / "out-ref")) <= 1e-6
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert [h["step"] for h in log["history"]] == list(range(8))


def test_a_corrupt_newest_checkpoint_is_skipped_with_a_clear_message(tmp_path, policy_cfg, rollouts, caplog):
    ck = tmp_path / "ck"
    run_job(job(tmp_path, "j", policy_cfg, rollouts, ck, steps=3, checkpoint_every=1, keep_checkpoints=3),
            tmp_path / "out")
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-000001", "step-000002", "step-000003"]
    newest = ck / "step-000003" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # a partial write
    (ck / "step-000002" / "manifest.json").unlink()  # an unfinished one
    with caplog.at_level(logging.WARNING):
        folder, state = ckpt.latest_valid(ck)
    assert folder.name == "step-000001" and state["step"] == 1
    assert "does not match its checksum" in caplog.text and "no readable manifest.json" in caplog.text


def test_a_checkpoint_of_other_settings_is_refused_but_a_longer_run_resumes(tmp_path, policy_cfg, rollouts):
    ck = tmp_path / "ck"
    run_job(job(tmp_path, "short", policy_cfg, rollouts, ck, steps=1, checkpoint_every=1), tmp_path / "short-out")
    with pytest.raises(RuntimeError, match=r"other settings \(learning_rate: 0.001 -> 0.002\).*new train.checkpoint_dir"):
        run_job(job(tmp_path, "other", policy_cfg, rollouts, ck, steps=2, checkpoint_every=1, learning_rate=2e-3),
                tmp_path / "other-out")
    assert not (tmp_path / "other-out").exists()
    longer = run_job(job(tmp_path, "longer", policy_cfg, rollouts, ck, steps=2, checkpoint_every=1, keep_checkpoints=3),
                     tmp_path / "longer-out")
    assert [h.step for h in longer.history] == [0, 1]  # step 0 came from the checkpoint

    folder = ck / "step-000002"  # made a checkpoint of the trainer before OBJECTIVE_VERSION existed
    state = json.loads((folder / ckpt.STATE).read_text())
    del state["objective_version"]
    (folder / ckpt.STATE).write_text(json.dumps(state))
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    manifest[ckpt.STATE] = {"size": (folder / ckpt.STATE).stat().st_size, "sha256": ckpt.sha256(folder / ckpt.STATE)}
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match=r"objective version 1, this one 2.*new train.checkpoint_dir"):
        run_job(job(tmp_path, "later", policy_cfg, rollouts, ck, steps=3, checkpoint_every=1, keep_checkpoints=3),
                tmp_path / "later-out")


def test_lora_adapter_loads_into_flux_pipeline_and_reproduces_the_trained_model(tmp_path, policy_cfg, rollouts,
                                                                               tiny_flux_dir):
    from diffusers import FluxPipeline

    trainer = run_job(job(tmp_path, "lora", policy_cfg, rollouts, steps=2, finetune="lora", lora_rank=4,
                          lora_alpha=16.0), tmp_path / "lora-out")  # alpha != rank: the scale must travel too
    assert (tmp_path / "lora-out" / "pytorch_lora_weights.safetensors").exists()
    trained = sum(p.numel() for p in trainer.params)
    total = sum(p.numel() for p in trainer.policy.transformer.parameters())
    assert 0 < trained < total / 2

    pipe = FluxPipeline.from_pretrained(str(tiny_flux_dir))
    x = torch.randn(1, 4, 4, 4)
    cond = trainer.policy.encode_prompts(["a red circle"])
    from srpo.models.flux import FluxPolicy

    base_v = FluxPolicy(pipe).velocity(x, torch.tensor([0.8]), cond, 3.5)
    pipe.load_lora_weights(str(tmp_path / "lora-out"))
    lora_v = FluxPolicy(pipe).velocity(x, torch.tensor([0.8]), cond, 3.5)
    with torch.no_grad():
        trained_v = trainer.policy.velocity(x, torch.tensor([0.8]), cond, 3.5)
    assert torch.allclose(lora_v, trained_v, atol=1e-5)
    assert not torch.allclose(lora_v, base_v, atol=1e-5)
    image = pipe("a red circle", height=32, width=32, num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_full_weights_load_into_flux_pipeline_and_generate(tmp_path, policy_cfg, rollouts, tiny_flux_dir):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    run_job(job(tmp_path, "full", policy_cfg, rollouts, steps=1), tmp_path / "full-out")
    transformer = FluxTransformer2DModel.from_pretrained(str(tmp_path / "full-out"))
    pipe = FluxPipeline.from_pretrained(str(tiny_flux_dir), transformer=transformer)
    image = pipe("a red circle", height=32, width=32, num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_evaluation_loader_applies_a_saved_lora_adapter(tmp_path, policy_cfg, rollouts):
    trainer = run_job(job(tmp_path, "lora2", policy_cfg, rollouts, steps=1, finetune="lora", lora_rank=2,
                          lora_alpha=2.0), tmp_path / "lora2-out")
    tuned = load_policy(policy_cfg, transformer=str(tmp_path / "lora2-out"))
    x, cond = torch.randn(1, 4, 4, 4), tuned.encode_prompts(["a cat"])
    with torch.no_grad():
        assert torch.allclose(tuned.velocity(x, torch.tensor([0.7]), cond, 3.5),
                              trainer.policy.velocity(x, torch.tensor([0.7]), cond, 3.5), atol=1e-5)


#: The methods of issue 26, each at its smallest: 2 updates of batch 2 (one prompt per process under FSDP).
NEW_METHODS = {
    "nft": dict(nft={"group_size": 2, "train_fraction": 0.5}),
    "awm": dict(awm={"group_size": 2, "num_train_steps": 2}),
    "mixgrpo": dict(grpo={"group_size": 2, "clip_range": 0.2}, mixgrpo={"window_size": 2, "shift_every": 1}),
    "drtune": dict(reward_form="plain", drtune={"num_train_steps": 2}),
}
#: GRPO under DDP on SD3 (LoRA): its groups are seeded by global sample (srpo.training.methods.GRPO).
GRPO_LORA = dict(method="grpo", inversion=False, finetune="lora",
                 grpo={"group_size": 2, "steps": "random", "num_train_steps": 2})
#: The FSDP runs of FLUX.1 (LoRA, fused branches, guarded) and SD3 (full): (finetune, fuse_branches, family).
FSDP_RUNS = [("lora", True, "flux"), ("full", False, "sd3")]
ONE_LAUNCH = Path(__file__).with_name("_jobs_in_one_launch.py")


@pytest.fixture(scope="module")
def launched(tmp_path_factory, policy_cfg, rollouts, family_setups):
    """The folder where one torchrun launch of 2 CPU processes trained every 2-process job of the tests below,
    one after another (tests/training/_jobs_in_one_launch.py): the processes, imports and gloo group are paid
    once. ``<name>/job`` went to ``<name>/out``.

    A run that must also resume is two jobs, not three: ``<name>-first`` trains update 1 and checkpoints it in
    ``<name>/ck``; ``<name>`` resumes there and trains update 2. Its weights, compared with one process of batch
    2 (at 1e-5), prove the sharded training and the exact resume at once: update 2 moves weights by up to the
    learning rate (1e-3 measured on each such job, Adam's step), so a resume that lost the optimizer's moments,
    the RNG or a rank's shard, and trained another update 2, lands far outside the tolerance."""
    root = tmp_path_factory.mktemp("launched")
    jobs = {"bf16": job(root / "bf16", "job", policy_cfg, rollouts, steps=1, batch_size=1, distributed="fsdp",
                        fsdp_param_dtype="bfloat16"),
            "grpo-ddp": job(root / "grpo-ddp", "job", *family_setups("sd3"), steps=2, batch_size=1,
                            distributed="ddp", **GRPO_LORA)}

    def first_then_resumed(name, cfg_rollouts, **common):
        ck = root / name / "ck"  # rank 0 reads the full optimizer of update 1 and sends each rank its shards
        jobs[f"{name}-first"] = job(root / f"{name}-first", "job", *cfg_rollouts, ck, steps=1, batch_size=1, **common)
        jobs[name] = job(root / name, "job", *cfg_rollouts, ck, steps=2, batch_size=1, **common)

    for finetune, fuse, family in FSDP_RUNS:  # the guard under FSDP (LoRA, uninterrupted); full: resumed mid-run
        name, cfg_rollouts = f"fsdp-{finetune}-{family}", family_setups(family)
        common = dict(distributed="fsdp", checkpoint_every=1, finetune=finetune, fuse_branches=fuse,
                      **(dict(guard=GUARD, guard_prompts=HELD_OUT) if finetune == "lora" else {}))
        if finetune == "full":
            first_then_resumed(name, cfg_rollouts, **common)
        else:
            jobs[name] = job(root / name, "job", *cfg_rollouts, root / name / "ck", steps=2, batch_size=1, **common)
    for name, settings in NEW_METHODS.items():
        first_then_resumed(name, (policy_cfg, rollouts), method=name, inversion=False, distributed="fsdp",
                           checkpoint_every=1, **settings)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(ONE_LAUNCH)]
    # No retry: a crash fails here, loudly. Once in about ten suite runs (2026-12-03, never alone) rank 0 aborted
    # inside torch's gloo all-gather of the FSDP state dict of a resumed run ("free(): double free detected");
    # PYTHONFAULTHANDLER makes a native crash print every thread's Python stack into the test's output.
    try:
        subprocess.run(cmd + [str(p) for name, d in jobs.items() for p in (d, root / name / "out")], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})
    except subprocess.CalledProcessError as err:
        pytest.fail(f"the launched 2-process runs crashed (exit {err.returncode}"
                    f"{', ' + signal.Signals(-err.returncode).name if err.returncode < 0 else ''}): see the "
                    "ranks' output above (faulthandler stacks for a native crash)", pytrace=False)
    return root


# DDP over two processes is tests/training/test_multinode.py's two-pod run (FLUX.1, full) and GRPO's below; here
# FSDP shards FLUX.1's LoRA run (fused branches, the guard) and SD3's JointTransformerBlocks (full).
@pytest.mark.parametrize("finetune, fuse, family", FSDP_RUNS)
def test_two_processes_of_batch_one_equal_one_process_of_batch_two(tmp_path, family_setups, launched, finetune, fuse,
                                                                   family):
    policy_cfg, rollouts = family_setups(family)
    guarded = dict(guard=GUARD, guard_prompts=HELD_OUT) if finetune == "lora" else {}
    run_job(job(tmp_path, "single", policy_cfg, rollouts, steps=2, batch_size=2, finetune=finetune,
                fuse_branches=fuse, **guarded), tmp_path / "single-out", guard_metrics=build_job_guard_metrics)
    two = launched / f"fsdp-{finetune}-{family}"
    single = transformer_weights(tmp_path / "single-out")
    assert max_abs_diff(single, transformer_weights(two / "out")) <= 1e-5
    log = json.loads((two / "out" / "training_log.json").read_text())
    assert log["processes"] == 2 and log["strategy"] == "fsdp"  # FSDP really sharded, not DDP in disguise
    if guarded:  # the same checks (prompts split over the ranks and gathered) and the same published update
        one = json.loads((tmp_path / "single-out" / "training_log.json").read_text())
        assert log["published_update"] == one["published_update"]
        assert len(log["guard"]["checks"]) == len(one["guard"]["checks"]) == 3
        for a, b in zip(log["guard"]["checks"], one["guard"]["checks"]):
            assert a["values"] == pytest.approx(b["values"], abs=1e-4)
    state = json.loads((two / "ck" / "step-000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and (two / "ck" / "step-000002" / "rng-rank1.pt").exists()
    if finetune == "full":  # resumed from update 1's checkpoint, and still equal to the single process above
        assert_resumed(launched, f"fsdp-{finetune}-{family}")


def assert_resumed(launched: Path, name: str) -> None:
    """``name`` took update 1 from ``name-first``'s checkpoint (its log entry, the seconds included, is the
    first run's: not trained again) and trained update 2 itself."""
    first, resumed = (json.loads((launched / d / "out" / "training_log.json").read_text())["history"]
                      for d in (f"{name}-first", name))
    assert [h["step"] for h in resumed] == [0, 1] and resumed[0] == first[0]


def test_fsdp_with_bf16_parameters_trains_fp32_shards_in_the_same_direction(tmp_path, policy_cfg, rollouts, launched):
    run_job(job(tmp_path, "single", policy_cfg, rollouts, steps=1, batch_size=2), tmp_path / "single-out")
    base = transformer_weights(Path(policy_cfg.pretrained) / "transformer")
    single, mixed = transformer_weights(tmp_path / "single-out"), transformer_weights(launched / "bf16" / "out")
    assert {v.dtype for v in mixed.values()} == {torch.float32}  # the shards (master weights) stay fp32
    step = lambda w: torch.cat([(w[k] - base[k]).flatten() for k in sorted(base)])  # noqa: E731
    # bf16 compute changes the gradients slightly; Adam's first step is close to lr * sign(g)
    assert torch.nn.functional.cosine_similarity(step(single), step(mixed), dim=0) > 0.8
    assert max_abs_diff(single, mixed) > 0  # the bf16 path really ran


def test_grpo_over_two_processes_equals_one_process_on_a_non_flux_family(tmp_path, family_setups, launched):
    """GRPO's groups are seeded by global sample (srpo.training.methods.GRPO): DDP over 2 processes of one
    prompt each trains the LoRA adapter as one process of two prompts (SD3, the clip reward)."""
    policy_cfg, rollouts = family_setups("sd3")
    run_job(job(tmp_path, "single", policy_cfg, rollouts, steps=2, batch_size=2, **GRPO_LORA), tmp_path / "single-out")
    two = launched / "grpo-ddp" / "out"
    assert max_abs_diff(transformer_weights(tmp_path / "single-out"), transformer_weights(two)) <= 1e-5
    one, log = (json.loads((d / "training_log.json").read_text()) for d in (tmp_path / "single-out", two))
    assert log["processes"] == 2 and log["strategy"] == "ddp"
    assert [h["reward"] for h in log["history"]] == pytest.approx([h["reward"] for h in one["history"]], abs=1e-5)


@pytest.mark.parametrize("name", list(NEW_METHODS))
def test_the_new_methods_over_two_fsdp_processes_equal_one_process_and_resume_exactly(tmp_path, policy_cfg, rollouts,
                                                                                       launched, name):
    """NFT, AWM, MixGRPO and DRTune (full fine-tuning, FLUX.1): a 2-process FSDP run of batch 1 that trained
    update 1, stopped, and resumed from its checkpoint for update 2 ends where one process of batch 2 did
    (NFT / AWM normalise by the std gathered over every process; the old / EMA policies, the window and the
    draws come from the checkpoint)."""
    run_job(job(tmp_path, "single", policy_cfg, rollouts, steps=2, batch_size=2, method=name, inversion=False,
                **NEW_METHODS[name]), tmp_path / "single-out")
    two = launched / name
    assert max_abs_diff(transformer_weights(tmp_path / "single-out"), transformer_weights(two / "out")) <= 1e-5
    log = json.loads((two / "out" / "training_log.json").read_text())
    assert log["processes"] == 2 and log["strategy"] == "fsdp" and log["config"]["method"] == name
    state = json.loads((two / "ck" / "step-000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and (two / "ck" / "step-000002" / "rng-rank1.pt").exists()
    assert_resumed(launched, name)
