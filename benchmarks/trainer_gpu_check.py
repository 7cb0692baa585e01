"""The real trainer on a GPU with a tiny FLUX: bf16 autocast, full and LoRA, checkpoint and resume.

    python -m benchmarks.trainer_gpu_check             # needs a CUDA device
    python -m benchmarks.trainer_gpu_check --compile   # also LoRA with policy.compile, against eager

A check of the GPU code path (accelerate on CUDA, autocast, checkpoint round trip), not a speed
measurement: the model is tiny. Prints one JSON object last; ``--json-out PATH`` also writes it to
PATH, after each finetune with ``"partial": true``, so a run stopped by a time limit keeps the
finetunes it finished.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks.common import emit, machine, write_json


def weights(folder: Path) -> dict:
    out = {}
    for f in folder.glob("*.safetensors"):
        out.update(load_file(str(f)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compile", action="store_true", help="also train LoRA with compiled blocks")
    parser.add_argument("--json-out", default=None, help="also write the JSON result to this file, after each finetune")
    args = parser.parse_args()  # before the heavy imports: --help answers at once

    from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
    from srpo.models.families import load_policy
    from srpo.rewards import RewardConfig
    from srpo.training.job import run_job, write_job
    from srpo.training.rollouts import generate_rollouts

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check runs on a GPU")
    work = Path(tempfile.mkdtemp())
    policy_cfg = PolicyConfig(pretrained="builtin:tiny-flux", height=64, width=64, device="cuda", autocast="bfloat16")
    rollout_cfg = RolloutConfig(num_steps=6)
    reward = RewardConfig(name="clip", checkpoint="builtin:tiny")
    prompts = ["a red circle", "a blue square", "a black cat", "a white bird"]
    rollouts = generate_rollouts(load_policy(policy_cfg), prompts, rollout_cfg, policy_cfg)
    results = {"benchmark": "trainer_gpu_check", "machine": machine()}
    for finetune in ("full", "lora", "lora-compiled") if args.compile else ("full", "lora"):
        compiled = finetune.endswith("-compiled")
        run_policy = policy_cfg.model_copy(update={"compile": True}) if compiled else policy_cfg
        train = TrainConfig(steps=4, batch_size=2, num_injections=2, learning_rate=1e-4, max_grad_norm=1.0,
                            finetune=finetune.removesuffix("-compiled"), lora_rank=4, lora_alpha=4.0, checkpoint_every=2,
                            checkpoint_dir=str(work / f"ck-{finetune}"), vae_gradient_checkpointing=True)
        job = write_job(work / finetune, run_policy, reward, rollout_cfg, train, rollouts)
        start = time.perf_counter()
        trainer = run_job(job, work / f"out-{finetune}")
        seconds = time.perf_counter() - start
        again = run_job(job, work / f"again-{finetune}")  # resumes at the last step: nothing left to do
        a, b = weights(work / f"out-{finetune}"), weights(work / f"again-{finetune}")
        results[finetune] = {
            "seconds": seconds,
            "rewards": [h.reward for h in trainer.history],
            "all_finite": all(torch.isfinite(torch.tensor([h.reward, h.loss, h.grad_norm])).all() for h in trainer.history),
            "skipped": trainer.skipped,
            "resume_identical": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
            "resumed_history": len(again.history),
            "device": str(trainer.accelerator.device),
        }
        if compiled:  # bf16 kernels differ between eager and inductor: report the gap, do not assume zero
            eager = weights(work / "out-lora")
            results[finetune]["max_abs_diff_to_eager"] = max(float((a[k] - eager[k]).abs().max()) for k in a)
        print(finetune, json.dumps(results[finetune]), flush=True)
        if args.json_out:
            write_json({**results, "partial": True}, args.json_out)
    emit(results, args.json_out)


if __name__ == "__main__":
    main()
