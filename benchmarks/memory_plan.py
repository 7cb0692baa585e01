"""Planned vs measured memory of one CPU training update (the memory plan's check), and the docs table.

    python -m benchmarks.memory_plan                 # mid-size FLUX at 128 px: plan vs measured, LoRA and full
    python -m benchmarks.memory_plan --table         # docs/performance.md's per-family table (from the plan)
    python -m benchmarks.memory_plan --text-encoders # training process peak RSS with / without text encoders
    python -m benchmarks.memory_plan --configs       # every real config in configs/: its hardware and planned GB per GPU

The measurement counts every live CPU tensor storage (parameters, gradients, AdamW moments,
activations and temporaries) through a ``TorchDispatchMode`` that adds each new storage's bytes
and subtracts them when the storage is freed; the peak over one ``train_step`` is compared with
the plan's components without the GPU-only margin and CUDA context (the text encoders' weights are
not counted on either side: the training process does not load them). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks.common import emit, machine

MID = dict(num_layers=2, num_single_layers=4, num_heads=8, head_dim=64, axes_dims_rope=(16, 24, 24),
           text_dim=256, pooled_dim=256, latent_channels=16, vae_channels=32, t5_max_length=32)


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of live CPU tensor storages while the mode is on (existing ones added with :meth:`hold`)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def hold(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.live or storage.nbytes() == 0:
            return
        nbytes = storage.nbytes()
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        self.live[key] = weakref.ref(storage, lambda _ref, key=key, nbytes=nbytes: self._drop(key, nbytes))

    def _drop(self, key: int, nbytes: int) -> None:
        if self.live.pop(key, None) is not None:
            self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_meta:
                self.hold(t)
        return out


def measured_peak(trainer, step: int, modules) -> int:
    """Peak live tensor bytes over ``trainer.train_step(step)``, the modules' weights and the optimizer state included."""
    mode = LiveTensorPeak()
    existing = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    existing += [t for state in trainer.optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    for t in existing:
        if type(t) in (torch.Tensor, torch.nn.Parameter):
            mode.hold(t)
    with mode:
        trainer.train_step(step)
    return mode.peak


def plan_vs_measured(finetune: str, checkpointing: bool, size: int = 128, quick: bool = False) -> dict:
    """One update of the mid-size FLUX (tiny CLIP reward), planned and measured, in bytes."""
    from srpo.artifacts import RolloutSet
    from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
    from srpo.models.families import load_policy
    from srpo.models.tiny import TinyFluxSpec, save_tiny_flux
    from srpo.rewards import RewardConfig, load_reward
    from srpo.training.memory import CUDA_CONTEXT_GB, GB, MARGIN, plan_memory
    from srpo.training.trainer import SRPOTrainer

    folder = save_tiny_flux(Path(tempfile.mkdtemp()) / "flux", TinyFluxSpec(**({} if quick else MID)), seed=0)
    policy_cfg = PolicyConfig(pretrained=str(folder), height=size, width=size, device="cpu",
                              gradient_checkpointing=checkpointing)
    reward_cfg = RewardConfig(name="clip", checkpoint="builtin:tiny")
    train_cfg = TrainConfig(steps=5, batch_size=1, finetune=finetune, learning_rate=1e-6, method="direct_align",
                            inversion=False, reward_form="plain", num_injections=1)
    policy, reward = load_policy(policy_cfg), load_reward(reward_cfg)
    shape = policy.latent_shape(size, size)
    g = torch.Generator().manual_seed(0)
    data = RolloutSet(["a cat"], torch.randn(1, *shape, generator=g), torch.randn(1, *shape, generator=g),
                      "offline", size, size)
    trainer = SRPOTrainer(policy, reward, data, train_cfg, RolloutConfig(num_steps=4))
    trainer.train_step(0)  # AdamW's moments exist from here on, as in every later update
    measured = measured_peak(trainer, 1, [policy.transformer, policy.pipe.vae, reward])
    plan = plan_memory(policy_cfg, train_cfg, reward_cfg)
    planned = (plan.total() - CUDA_CONTEXT_GB * GB) / MARGIN  # what the trace counts: no GPU margin or context
    return {"finetune": finetune, "checkpointing": checkpointing, "size": size, "planned_bytes": planned,
            "planned_with_margin": planned * MARGIN, "measured_bytes": measured, "ratio": planned / measured,
            "components": {name: value for name, value in plan.rows()}}


def training_process_rss(text_encoders: bool, size: int, quick: bool) -> dict:
    """Peak RSS (MiB) of a training process: load the policy (with or without text encoders) and train 2 updates."""
    import resource

    from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
    from srpo.models.families import load_policy
    from srpo.models.tiny import TinyFluxSpec, save_tiny_flux
    from srpo.rewards import RewardConfig, load_reward

    from srpo.training.trainer import SRPOTrainer

    folder = save_tiny_flux(Path(tempfile.mkdtemp()) / "flux", TinyFluxSpec(**({} if quick else MID)), seed=0)
    policy_cfg = PolicyConfig(pretrained=str(folder), height=size, width=size, device="cpu")
    rollout_cfg = RolloutConfig(num_steps=4)
    prompts = [f"a photo of object {i}" for i in range(2)]
    # the rollout step, in its own process in a pipeline: here a child that only writes the set
    work = Path(tempfile.mkdtemp())
    code = ("import sys; from pathlib import Path; from srpo.config import PolicyConfig, RolloutConfig; "
            "from srpo.models.families import load_policy; from srpo.training.rollouts import generate_rollouts; "
            f"cfg = PolicyConfig(pretrained={str(folder)!r}, height={size}, width={size}, device='cpu'); "
            f"generate_rollouts(load_policy(cfg), {prompts!r}, RolloutConfig(num_steps=4), cfg).save({str(work)!r})")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    from srpo.artifacts import RolloutSet

    rollouts = RolloutSet.load(work)
    if not text_encoders:
        assert rollouts.conditioning
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    policy = load_policy(policy_cfg, text_encoders=text_encoders)
    encoder_params = sum(p.numel() for m in policy.text_encoders for p in m.parameters())
    trainer = SRPOTrainer(policy, load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny")), rollouts,
                          TrainConfig(steps=2, batch_size=2, finetune="lora", learning_rate=1e-4), rollout_cfg)
    trainer.train()

    return {"text_encoders": text_encoders, "text_encoder_params": encoder_params,
            "rss_before_load_mib": before, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def text_encoder_rows(size: int, quick: bool) -> list[dict]:
    """Each variant in its own process (peak RSS is per process)."""
    import subprocess
    import sys

    rows = []
    for flag in ("1", "0"):
        code = (f"import json; from benchmarks.memory_plan import training_process_rss; "
                f"print(json.dumps(training_process_rss({flag == '1'}, {size}, {quick})))")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


GPUS_GB = (24, 48, 80, 141)
KINDS = ("none", "int8", "fp8", "nf4")


def family_table(family: str) -> list[dict]:
    """Planned GB per GPU of a LoRA r16 run (batch 1, bf16 autocast) of ``family``'s flagship at its default resolution."""
    from srpo.config import PolicyConfig, TrainConfig
    from srpo.rewards import RewardConfig
    from srpo.models.published_configs import PUBLISHED
    from srpo.training.memory import GB, plan_memory

    published = PUBLISHED[family]
    side = published["resolution"]
    policy = PolicyConfig(pretrained=published["model"], family=family, height=side, width=side, autocast="bfloat16")
    train, reward = TrainConfig(finetune="lora", lora_rank=16, lora_alpha=16), RewardConfig(name="hpsv2.1")
    rows = []
    for checkpointing in (False, True):
        for kind in KINDS:
            plan = plan_memory(policy, train, reward, quantization=kind, checkpointing=checkpointing)
            rows.append({"family": family, "model": published["model"], "resolution": side, "quantization": kind,
                         "checkpointing": checkpointing, "total_gb": plan.total() / GB,
                         "total_with_text_encoders_gb": plan.total(with_text_encoders=True) / GB,
                         "fits": {gb: plan.total() <= gb * GB for gb in GPUS_GB}})
    return rows


def markdown(rows: list[dict]) -> str:
    """The per-family tables of docs/performance.md."""
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        out += [f"**{family}** ({mine[0]['model']}, {mine[0]['resolution']} px, LoRA r16, batch 1, bf16):", "",
                "| base | checkpointing | planned GB (with text encoders loaded) | " + " | ".join(f"{g} GB" for g in GPUS_GB) + " |",
                "|---|---|---|" + "---|" * len(GPUS_GB)]
        for r in mine:
            marks = " | ".join("fits" if r["fits"][g] else "-" for g in GPUS_GB)
            out.append(f"| {r['quantization']} | {'on' if r['checkpointing'] else 'off'} | {r['total_gb']:.1f} "
                       f"({r['total_with_text_encoders_gb']:.1f}) | {marks} |")
        out.append("")
    return "\n".join(out)


def config_rows(paths: list[str]) -> list[dict]:
    """Each real config's declared hardware and its three plans (rollout step, training update, evaluation), in GB per GPU.

    The plans are those ``python -m ops.validate`` checks (:func:`ops.validate.check_memory_plan`)."""
    import yaml

    from ops.validate import load_pipeline, pipeline_source, validate_parameters
    from srpo.training.fit import ROLLOUT_BATCH
    from srpo.training.memory import GB, plan_inference, plan_memory

    rows = []
    for path in paths:
        path = Path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        params = validate_parameters(load_pipeline(pipeline_source(path)), raw.get("parameters") or {})
        policy, train, rollouts = params.get("policy"), params.get("train"), params.get("rollouts")
        if policy is None or policy.gpu_memory_gb is None:
            continue
        hardware = next((line.split("Hardware:", 1)[1].split(" (")[0].split(";")[0].strip()  # "8 x 80 GB GPUs, one node"
                         for line in path.read_text().splitlines() if line.startswith("# Hardware:")), "")
        row = {"config": path.name, "hardware": hardware, "gpu_memory_gb": policy.gpu_memory_gb,
               "model": policy.pretrained, "resolution": policy.height}
        if rollouts is not None and params.get("prompts") is not None:
            n = rollouts.num_prompts or 32
            row["rollout_gb"] = plan_inference(policy, ROLLOUT_BATCH, n).total() / GB
        if train is not None:
            reward = params.get("rewards") or params.get("reward")
            plan = plan_memory(policy, train, reward, metrics=params.get("metrics"))
            row.update(train_gb=plan.total() / GB, finetune=train.finetune, world=plan.world,
                       quantization=plan.quantization)
        if params.get("evaluation") is not None:
            batch = getattr(params.get("report"), "batch_size", 4)
            row["evaluation_gb"] = plan_inference(policy, batch, batch, decode_batch=batch).total() / GB
        row["largest_gb"] = max(row.get(k, 0.0) for k in ("rollout_gb", "train_gb", "evaluation_gb"))
        row["fits"] = row["largest_gb"] <= policy.gpu_memory_gb
        rows.append(row)
    return rows


def config_markdown(rows: list[dict]) -> str:
    """README's and docs/performance.md's table of the shipped configs."""
    out = ["| config | hardware | trains | rollout step GB | training GB per GPU | evaluation GB |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        trains = (f"{r['finetune']}" + (f", FSDP x{r['world']}" if r.get("world", 1) > 1 else "")
                  + (f", {r['quantization']} base" if r.get("quantization", "none") != "none" else "")) if "train_gb" in r else "-"
        cell = lambda key: f"{r[key]:.1f}" if key in r else "-"  # noqa: E731
        out.append(f"| `{r['config']}` | {r['hardware']} | {trains} | {cell('rollout_gb')} | {cell('train_gb')} | "
                   f"{cell('evaluation_gb')} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table", action="store_true", help="the per-family planned-memory table (markdown)")
    parser.add_argument("--families", default="flux,qwen-image,sd3,flux2,flux2-klein,z-image")
    parser.add_argument("--text-encoders", action="store_true",
                        help="peak RSS of the training process with and without its text encoders")
    parser.add_argument("--configs", nargs="*", metavar="CONFIG",
                        help="the hardware and plans of these run configs (default: every real config in configs/)")
    args = parser.parse_args()
    if args.configs is not None:
        rows = config_rows(args.configs or sorted(str(p) for p in Path("configs").glob("*.yaml")))
        print(config_markdown(rows))
        emit({"benchmark": "memory_plan_configs", "rows": rows, "all_fit": all(r["fits"] for r in rows)})
        return
    if args.text_encoders:
        rows = text_encoder_rows(args.size, args.quick)
        for r in rows:
            print(f"text encoders {'loaded' if r['text_encoders'] else 'absent'}: {r['text_encoder_params'] / 1e6:.1f}M "
                  f"params, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
        emit({"benchmark": "training_process_rss", "size": args.size, "quick": args.quick, "rows": rows,
              "saved_mib": rows[0]["peak_rss_mib"] - rows[1]["peak_rss_mib"], "machine": machine()})
        return
    if args.table:
        rows, failed = [], {}
        for family in args.families.split(","):
            try:
                rows += family_table(family)
            except Exception as err:  # noqa: BLE001 - one family's config must not hide the others
                failed[family] = f"{type(err).__name__}: {err}"[:300]
        print(markdown(rows))
        emit({"benchmark": "memory_plan_table", "rows": rows, "failed": failed})
        return
    rows = []
    for finetune in ("lora", "full"):
        for checkpointing in (False, True):
            r = plan_vs_measured(finetune, checkpointing, args.size, args.quick)
            rows.append(r)
            print(f"{finetune:>4} checkpointing {str(checkpointing):>5}: planned {r['planned_bytes'] / 2**20:7.1f} MiB "
                  f"measured {r['measured_bytes'] / 2**20:7.1f} MiB  ratio {r['ratio']:.2f}", flush=True)
    emit({"benchmark": "memory_plan", "size": args.size, "quick": args.quick, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
