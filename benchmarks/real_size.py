"""One real-size training update per model family and method, on fake tensors (no memory) or on a GPU.

    python -m benchmarks.real_size                          # six families x (srpo, grpo) on fake tensors:
                                                            # planned vs traced activation memory
    python -m benchmarks.real_size --family flux --method srpo
    python -m benchmarks.real_size --device cuda --method srpo   # on a GPU: random bf16 weights, seconds per
                                                            # update, MFU and peak memory against the plan
    python -m benchmarks.real_size --device cpu --tiny      # the GPU path on the CPU at tiny size (a smoke check)

Each family is built from its published configs (:data:`srpo.models.published_configs.PUBLISHED`) at
the resolution, guidance, grid and reward form of its real config in ``configs/`` (:func:`real_config`),
and trained through the library's own pieces: the family adapter's ``velocity`` (packing, position
ids, text layout), ``rollout``, ``to_vae_latents`` / ``decode``, the stored-conditioning path of the
prompt cache, :mod:`srpo.direct_align`, :mod:`srpo.grpo`, the open_clip reward (ViT-H-14, random
weights) and AdamW (fused, as the trainer) over LoRA on the family's targets. The whole frozen model
runs at real size.

- ``srpo``: one Euler rollout step (no grad, the rollout's guidance), then the denoise and inversion
  branches (Direct-Align recovery, VAE decode, reward tower, SRP reward, hinge loss, one backward
  each, or one fused backward with ``train.fuse_branches``), gradient clipping and an optimizer step.
- ``grpo``: one SDE sampler step for a group (no grad) with its log-probabilities, decode and
  reward of the group, group advantages, then the step's log-probability with grad on one micro
  batch, the clipped objective, backward and an optimizer step.

On fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``, default dtype bf16, CPU autocast
in bf16 as the GPU runs) nothing is allocated: every op runs on shapes, dtypes and strides only, so
FLUX.2 [dev]'s 32 B parameters at 1024 px take seconds. The bytes autograd saves for the backward
(:class:`srpo.training.memory.SavedTensors`, as the memory plan counts them) are reported per
component next to the plan's figures (:func:`srpo.training.memory.trace_model`).
The last line of output is one JSON object; ``--json-out PATH`` also writes it (after each family).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import yaml

from benchmarks.common import emit, machine, write_json

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("flux", "qwen-image", "sd3", "flux2", "flux2-klein", "z-image")
METHODS = ("srpo", "grpo")
REWARD_ARCHITECTURE = "ViT-H-14"  # HPS v2.1 / PickScore's tower, what every real config rewards with

#: ``--tiny``: small transformer overrides keeping each family's block structure, and small VAEs.
TINY_TRANSFORMER = {
    "flux": dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=16,
                 axes_dims_rope=[4, 6, 6], joint_attention_dim=32, pooled_projection_dim=32),
    "qwen-image": dict(num_layers=2, num_attention_heads=2, attention_head_dim=32, joint_attention_dim=32,
                       axes_dims_rope=[8, 12, 12]),
    "sd3": dict(num_layers=2, num_attention_heads=2, attention_head_dim=32, joint_attention_dim=32,
                caption_projection_dim=64, pooled_projection_dim=32, pos_embed_max_size=64),
    "flux2": dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=32,
                  joint_attention_dim=48, axes_dims_rope=[8, 8, 8, 8]),
    "flux2-klein": dict(num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=32,
                        joint_attention_dim=48, axes_dims_rope=[8, 8, 8, 8]),
    "z-image": dict(dim=64, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32,
                    axes_dims=[8, 12, 12]),
}
TINY_KL_VAE = dict(block_out_channels=[8, 8, 8, 8], norm_num_groups=4, layers_per_block=1)
TINY_VAE = {"AutoencoderKL": TINY_KL_VAE, "AutoencoderKLFlux2": dict(TINY_KL_VAE),
            "AutoencoderKLQwenImage": dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)}
TINY_SIDE, TINY_TEXT_TOKENS = 64, 16


# ---- the configs ----------------------------------------------------------------------------
@dataclass
class RealConfig:
    """A family's real config (``configs/*.yaml``), as the library's config objects."""

    family: str
    path: Path
    policy: object  # srpo.config.PolicyConfig
    train: object  # srpo.config.TrainConfig (LoRA, guard off: what this update trains)
    rollouts: object  # srpo.config.RolloutConfig
    reward: object  # srpo.rewards.RewardConfig
    grpo: object  # srpo.config.GRPOConfig (configs' GRPO run, e.g. configs/flux_grpo_hps.yaml)
    grpo_num_steps: int  # that run's sampler steps (the SDE's levels)


def _parameters(path: Path) -> dict:
    raw = yaml.safe_load(path.read_text()) or {}
    return raw.get("parameters") or {} if isinstance(raw, dict) else {}


def _family_of(policy: dict) -> str | None:
    from srpo.models.published_configs import PUBLISHED

    if policy.get("family"):
        return policy["family"]
    return next((f for f, p in PUBLISHED.items() if p["model"] == policy.get("pretrained")), None)


def real_config(family: str, configs: Path = ROOT / "configs") -> RealConfig:
    """``family``'s real SRPO config: of the non-built-in configs of that family training ``srpo`` against a
    ViT-H-14 reward, the one with the most pixels (the largest activations), then by file name.

    The update trains LoRA (rank and targets from the config, the family's own targets by default);
    GRPO's settings come from the real GRPO config (``train.method: grpo``), its rollout step count too.
    """
    from srpo.config import GRPOConfig, PolicyConfig, RolloutConfig, TrainConfig
    from srpo.rewards import RewardConfig

    found, grpo, grpo_steps = [], None, None
    for path in sorted(configs.glob("*.yaml")):
        params = _parameters(path)
        policy, train, reward = params.get("policy"), params.get("train") or {}, params.get("reward") or {}
        if not policy or str(policy.get("pretrained", "builtin:")).startswith("builtin:"):
            continue
        if train.get("method", "srpo") == "grpo" and grpo is None:
            grpo, grpo_steps = train.get("grpo") or {}, (params.get("rollouts") or {}).get("num_steps")
        if (_family_of(policy) == family and train.get("method", "srpo") == "srpo"
                and reward.get("architecture", REWARD_ARCHITECTURE) == REWARD_ARCHITECTURE
                and reward.get("name") in ("hpsv2.1", "clip", "pickscore")):
            found.append((-policy.get("height", 64) * policy.get("width", 64), path.name, path, params))
    if not found:
        raise ValueError(f"no real SRPO config of family {family!r} in {configs}: add one (policy.family: {family}, "
                         "train.method: srpo, a ViT-H-14 reward) or pass --family with one of those present")
    _, _, path, params = min(found)
    train = {k: v for k, v in params["train"].items() if k != "guard"}  # the guard's judges are not this update's
    train.update(finetune="lora")
    train_cfg = TrainConfig(**train)
    grpo_cfg = GRPOConfig(**(grpo or {}))
    rollouts = RolloutConfig(**{k: v for k, v in (params.get("rollouts") or {}).items() if k != "images"})
    return RealConfig(family, path, PolicyConfig(**params["policy"]), train_cfg, rollouts,
                      RewardConfig(**params["reward"]), grpo_cfg, grpo_steps or rollouts.num_steps)


# ---- fake tensors -----------------------------------------------------------------------------
@contextlib.contextmanager
def fake_tensors() -> Iterator[object]:
    """Run the block on fake tensors: no memory, every op on shapes and dtypes; default dtype bf16.

    ``nn.Module.to`` on fake parameters swaps them (``torch.utils.swap_tensors``), which refuses a
    tensor anything holds a weak reference to; the fake mode's converter keeps weak references to
    the tensors it made (to reuse them on a second conversion, which a module move never needs), so
    they are dropped before each swap. That lets the library's own ``.to`` calls (the policy's
    ``pipe.to(device)``, peft moving adapters to their layer's device and dtype) run unchanged.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    swap = torch.utils.swap_tensors

    def swap_fakes(t1, t2):
        mode.fake_tensor_converter.meta_converter.tensor_memo.clear()
        return swap(t1, t2)

    torch.utils.swap_tensors = swap_fakes
    try:  # built in bf16: `.to(dtype)` of 12-32 B parameters is not needed
        with built_in(torch.bfloat16), mode:
            yield mode
    finally:
        torch.utils.swap_tensors = swap


@contextlib.contextmanager
def built_in(dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly in ``dtype`` (random initialisation of billions of parameters in bf16)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(default)


def real_values():
    """Real tensors inside a fake-tensor block (schedules whose values are read as Python floats)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    return unset_fake_temporarily()


# ---- building -------------------------------------------------------------------------------
def build_policy(family: str, device: str, tiny: bool = False):
    """The family's :class:`~srpo.models.base.Policy` (transformer and VAE from the published configs, random
    weights, no text encoders) on ``device`` with bf16 autocast; on fake tensors with ``device="cpu"``."""
    import diffusers

    from srpo.models.families import adapter_class, family_named
    from srpo.models.published_configs import PUBLISHED

    spec, published = family_named(family), PUBLISHED[family]
    transformer_cfg = {**published["transformer"], **(TINY_TRANSFORMER[family] if tiny else {})}
    vae_cfg = {**published["vae"], **(TINY_VAE[published["vae_class"]] if tiny else {})}
    with real_values():  # the scheduler reads its sigmas as Python floats
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    with torch.device(device):
        transformer = getattr(diffusers, spec.transformer_class).from_config(transformer_cfg)
        vae = getattr(diffusers, published["vae_class"]).from_config(vae_cfg)
    pipeline_cls = getattr(diffusers, spec.pipeline_class)
    parts = {n: None for n in inspect.signature(pipeline_cls.__init__).parameters if n != "self"}
    parts.update(transformer=transformer, vae=vae, scheduler=scheduler)
    policy = adapter_class(family)(pipeline_cls(**parts), device, autocast_dtype=torch.bfloat16)
    return policy, transformer_cfg


def build_reward(device: str, tiny: bool = False):
    """The open_clip reward (ViT-H-14, random weights; ``tiny``: builtin:tiny's architecture) behind the protocol."""
    import open_clip

    from srpo.rewards.open_clip_reward import TINY_ARCHITECTURE, OpenClipReward, create_open_clip_model

    architecture = TINY_ARCHITECTURE if tiny else REWARD_ARCHITECTURE
    model = create_open_clip_model(architecture, device)
    return OpenClipReward(model, open_clip.get_tokenizer(architecture), architecture=architecture)


def store_conditioning(policy, cfg: RealConfig, prompts: list[str], text_tokens: int) -> None:
    """Random text rows of the family's stored-conditioning shapes (tokens [N, L, D], pooled [N, P]; the
    negative prompt's row for true-CFG families) put in the policy's prompt cache, as a rollout set's are."""
    t = policy.transformer.config
    width = t.get("joint_attention_dim") or t.get("cap_feat_dim")
    pooled = t.get("pooled_projection_dim")
    device = policy.device

    def rows(n: int, prefix: str = "") -> dict[str, torch.Tensor]:
        out = {f"{prefix}tokens": torch.randn(n, text_tokens, width, device=device)}  # [N, L, D]
        if pooled:
            out[f"{prefix}pooled"] = torch.randn(n, pooled, device=device)  # [N, P]
        with real_values():
            out[f"{prefix}lengths"] = torch.full((n,), text_tokens, dtype=torch.long)  # [N] read as ints
        return out

    stored = rows(len(prompts))
    if policy.guidance_kind == "cfg":
        stored.update(rows(1, "negative."))
    policy.use_stored_conditioning(prompts, stored)


# ---- measuring ------------------------------------------------------------------------------
class Saved:
    """Bytes autograd saves for the backward, per micro-step and component, as the memory plan counts them
    (:class:`srpo.training.memory.SavedTensors`: parameters excluded; the transformer's split by block).

    Each micro-step's backward frees what its forward saved, so the figure to compare with the plan
    is the largest micro-step's (:meth:`summary`).
    """

    def __init__(self, policy, reward):
        self.params = {id(p) for m in (policy.transformer, policy.pipe.vae, reward) for p in m.parameters()}
        self.blocks = [m for m in policy.transformer.modules() if type(m).__name__ in policy.block_classes]
        self.steps: list[dict] = []
        self.parts: dict = {}
        self.handles: list = []

    def micro_step(self) -> None:
        """Start counting a new micro-step (the previous one's backward has run)."""
        from srpo.training.memory import SavedTensors

        self._close()
        self.parts = {name: SavedTensors(self.params) for name in ("transformer", "vae", "reward")}
        self.handles = self.parts["transformer"].watch_blocks(self.blocks)

    @contextlib.contextmanager
    def counting(self, part: str):
        with torch.autograd.graph.saved_tensors_hooks(self.parts[part].pack, lambda t: t):
            yield

    def _close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.parts:
            t = self.parts["transformer"]
            self.steps.append({"transformer": t.total, "transformer_checkpointed": t.checkpointed,
                               "vae": self.parts["vae"].total, "reward": self.parts["reward"].total,
                               "total": sum(p.total for p in self.parts.values())})
            self.parts = {}

    def summary(self) -> dict:
        """The largest micro-step's saved bytes by component, and every micro-step's total."""
        self._close()
        largest = max(self.steps, key=lambda step: step["total"])
        return {**largest, "micro_steps": [step["total"] for step in self.steps]}


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """Skip ``torch.nn.init``'s random draws while building on fake tensors (values that do not exist)."""
    names = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "zeros_", "ones_", "constant_")
    kept = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in kept.items():
            setattr(torch.nn.init, name, fn)


def record_inputs(module: torch.nn.Module, into: dict) -> torch.utils.hooks.RemovableHandle:
    """Keep the shapes and dtypes of the first call's tensor inputs (lists of tensors: each) in ``into``."""

    def describe(v):
        if isinstance(v, torch.Tensor):
            return {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, torch.Tensor) for x in v):
            return [describe(x) for x in v]
        return None

    def hook(mod, args, kwargs):
        if not into:
            named = dict(zip(("args.0", "args.1", "args.2"), args))
            into.update({k: d for k, v in {**named, **kwargs}.items() if (d := describe(v)) is not None})

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def grads_and_state(params: list[torch.nn.Parameter], optimizer, names: dict[int, str]) -> dict:
    """Whether every trainable parameter got a gradient of its shape (the names of those without one), and the
    optimizer state's shapes."""
    state = [optimizer.state.get(p, {}) for p in params]
    return {"trainable": len(params), "trainable_numel": sum(p.numel() for p in params),
            "without_grad": [names.get(id(p), "?") for p in params if p.grad is None],
            "grads_of_param_shape": sum(p.grad is not None and p.grad.shape == p.shape for p in params),
            "grad_dtypes": sorted({str(p.grad.dtype).removeprefix("torch.") for p in params if p.grad is not None}),
            "moments_of_param_shape": sum(s.get("exp_avg") is not None and s["exp_avg"].shape == p.shape
                                          and s["exp_avg_sq"].shape == p.shape for p, s in zip(params, state)),
            "param_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in params})}


class Sync:
    """Wall seconds between marks, synchronising a GPU first."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.start = self.now()

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def lap(self) -> float:
        end = self.now()
        seconds, self.start = end - self.start, end
        return seconds


# ---- the updates -----------------------------------------------------------------------------
def keep_blocks(transformer: torch.nn.Module, depth: int) -> dict[str, int]:
    """Keep the first ``depth - 1`` blocks and the last one of each block list (in place); the blocks' own widths,
    heads and position ids stay the published ones, and so does the last block's special form (SD3.5's context-free
    last block, Qwen-Image's unused text stream). A quick trace of the real geometry: returns list -> blocks kept."""
    kept = {}
    for name, blocks in list(transformer.named_children()):
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks) > depth:
            setattr(transformer, name, torch.nn.ModuleList([*blocks[:depth - 1], blocks[-1]]))
            kept[name] = depth
    return kept


def setup_lora(policy, cfg: RealConfig):
    """LoRA on the family's targets, trained in fp32 over the bf16 base as the trainer does; fused AdamW."""
    from srpo.training.lora import add_lora

    train = cfg.train
    targets = list(train.lora_targets or policy.lora_targets)
    params = add_lora(policy.transformer, train.lora_rank, train.lora_alpha, targets, seed=train.seed)
    for p in params:  # the adapter's master weights in fp32 (the trainer's `policy.dtype`)
        p.data = p.data.to(torch.float32)
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, betas=train.betas, weight_decay=train.weight_decay,
                                  fused=True, foreach=False)
    return params, optimizer


def srpo_update(policy, reward, cfg: RealConfig, params, optimizer, saved: Saved | None, batch: int = 1,
                rollout_step: bool = True) -> dict:
    """One SRPO update (see the module docstring): shapes of what it made, its gradients and optimizer state.

    ``rollout_step``: x0 from one Euler step of the online rollout; else a stored rollout's (the trainer's first
    update, or offline mode), which saves the no-grad forwards."""
    from srpo.config import training_levels
    from srpo.direct_align import both_branches_recover, denoise_recover, euler_sample, inversion_recover
    from srpo.losses import reward_loss
    from srpo.schedules import linear_k
    from srpo.srp import semantic_reward, with_control

    train, roll, pol = cfg.train, cfg.rollouts, cfg.policy
    prompts = [f"prompt {i}" for i in range(batch)]
    with real_values():  # the grid's levels are read as Python floats, as the trainer reads them
        grid, d_sigma = training_levels(train)
        lo, hi = float(grid.min()), float(grid.max())
        t = float(grid[len(grid) // 2])
    cond = policy.encode_prompts(prompts)
    txt = {"plain": reward.text_features(prompts),  # [B, D] (no grad, cached)
           "pos": reward.text_features(with_control(train.positive_words[0], prompts)) if train.positive_words else None,
           "neg": reward.text_features(with_control(train.negative_words[0], prompts)) if train.negative_words else None}
    c, h, w = policy.latent_shape(pol.height, pol.width)
    latent = dict(device=policy.device, dtype=torch.float32)  # latents in fp32, as the trainer's seeded noise
    eps = torch.randn(batch, c, h, w, **latent)  # [B, C, h, w] the rollout's noise
    x0 = torch.randn(batch, c, h, w, **latent)  # [B, C, h, w] a stored rollout (the first update's)
    if rollout_step:
        with real_values():  # Policy.rollout builds its schedule inside: read it here, where values exist
            sigmas = policy.rollout_sigmas(roll.num_steps, roll.shift, h, w)  # [N+1]
        policy.transformer.eval()  # the rollout's first Euler step, no grad, the rollout's guidance (true CFG: 2 calls)
        x0 = euler_sample(lambda x, s: policy.guided_velocity(x, s, cond, roll.guidance), eps, sigmas[:2])
    out = {"x0": shape(x0), "x0_dtype": str(x0.dtype).removeprefix("torch."), "t": t, "d_sigma": d_sigma}
    counting = saved.counting if saved is not None else (lambda part: contextlib.nullcontext())

    def velocity(cond_b):
        def v(x, sigma):
            with counting("transformer"):
                return policy.velocity(x, sigma, cond_b, train.guidance)
        return v

    def reward_of(branch: str, images: torch.Tensor) -> torch.Tensor:
        with counting("reward"), policy.autocast():
            img = reward.image_features(images).float()  # [B, D]
        target, other = ("pos", "neg") if branch == "denoise" else ("neg", "pos")
        k_range = train.k_denoise if branch == "denoise" else train.k_inversion
        k = linear_k(t if branch == "denoise" else t - d_sigma, lo, hi, *k_range)
        return semantic_reward(train.reward_form, img, txt["plain"], txt[target], txt[other], k, train.cfg_k)

    branches = ("denoise", "inversion") if train.inversion else ("denoise",)
    groups = [branches] if train.fuse_branches else [(b,) for b in branches]
    optimizer.zero_grad(set_to_none=True)
    policy.transformer.train()
    for group in groups:
        if saved is not None:
            saved.micro_step()
        if len(group) == 2:
            x0_hat = torch.cat(both_branches_recover(velocity(cond.repeat(2)), x0, eps, t, d_sigma))
        else:
            recover = denoise_recover if group[0] == "denoise" else inversion_recover
            x0_hat = recover(velocity(cond), x0, eps, t, d_sigma)  # [B, C, h, w]
        with counting("vae"):
            images = policy.decode(x0_hat)  # [G*B, 3, H, W]
        loss = torch.zeros((), device=policy.device)
        for branch, img in zip(group, images.chunk(len(group))):
            r = reward_of(branch, img)  # [B]
            loss = loss + reward_loss(r, train.loss, train.tau) / len(branches)
            out[f"reward_{branch}"] = shape(r)
        loss.backward()
        out[f"x0_hat_{'+'.join(group)}"] = shape(x0_hat)
        out[f"images_{'+'.join(group)}"] = shape(images)
        out["images_dtype"] = str(images.dtype).removeprefix("torch.")
    torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
    optimizer.step()
    out.update(grads_and_state(params, optimizer, {id(p): n for n, p in policy.transformer.named_parameters()}))
    return out


def grpo_update(policy, reward, cfg: RealConfig, params, optimizer, saved: Saved | None) -> dict:
    """One GRPO update on one prompt's group (see the module docstring)."""
    from srpo import grpo

    g, roll, pol = cfg.grpo, cfg.rollouts, cfg.policy
    group = [f"prompt {0}"] * g.group_size  # N = G members of one prompt
    c, h, w = policy.latent_shape(pol.height, pol.width)
    with real_values():  # the sampler's levels are read as Python floats, as the trainer's are
        sigmas = policy.rollout_sigmas(cfg.grpo_num_steps, roll.shift, h, w)  # [T+1]
        stds = grpo.sde_sigmas(sigmas, g.noise_level, g.noise_schedule)  # [T]
        k = grpo.stochastic_steps(sigmas, stds)[0]  # the first stochastic step (the highest noise)
        t, t_next, sigma = float(sigmas[k]), float(sigmas[k + 1]), float(stds[k])
    cond = policy.encode_prompts(group)
    eps = torch.randn(len(group), c, h, w, device=policy.device, dtype=torch.float32)  # [N, C, h, w] at level t
    policy.transformer.eval()
    with torch.no_grad():  # grpo.sde_sample's step (it indexes its levels as tensors: not traceable on fakes)
        v = policy.velocity(eps, torch.full((len(group),), t, device=policy.device), cond, cfg.train.guidance)
        x_next, mean_old, std_old = grpo.sde_step(eps, v, t, t_next, sigma, torch.randn_like(eps))
        old_log_prob = grpo.gaussian_log_prob(x_next, mean_old, std_old, g.log_prob)  # [N]
    latents = torch.stack([eps, x_next])  # [2, N, C, h, w]
    with torch.no_grad():
        rewards = reward.score(policy.decode(latents[-1]), group).float()  # [N]
    advantages = grpo.group_advantages(rewards, g.group_size, g.advantage_eps, g.advantage_clip)  # [N]
    rows = slice(0, g.micro_batch or len(group))
    policy.transformer.train()
    optimizer.zero_grad(set_to_none=True)
    if saved is not None:
        saved.micro_step()
    train_velocity = policy.velocity_fn(policy.encode_prompts(group[rows]), cfg.train.guidance)
    counting = saved.counting("transformer") if saved is not None else contextlib.nullcontext()
    with counting:
        log_prob, mean, std = grpo.step_log_prob(train_velocity, latents[0][rows], latents[1][rows], t, t_next,
                                                 sigma, g.log_prob)  # [n], with grad
    loss, ratio = grpo.clipped_objective(log_prob, old_log_prob[rows], advantages[rows], g.clip_range)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
    optimizer.step()
    out = {"chain": shape(latents), "chain_dtype": str(latents.dtype).removeprefix("torch."), "old_log_prob": shape(old_log_prob), "rewards": shape(rewards),
           "advantages": shape(advantages), "log_prob": shape(log_prob), "ratio": shape(ratio),
           "mean": shape(mean), "sde_step": k, "micro_batch": rows.stop}
    out.update(grads_and_state(params, optimizer, {id(p): n for n, p in policy.transformer.named_parameters()}))
    return out


# ---- one family -----------------------------------------------------------------------------
def planned(cfg: RealConfig, batch: int, fuse_branches: bool = False, quantization: str = "none") -> dict:
    """The memory plan's figures for this update: the meta trace's activations and the plan's total."""
    from srpo.models.published_configs import PUBLISHED
    from srpo.training.memory import GB, VIT_H_14, describe_model, plan_memory, reward_memory, trace_model

    model = describe_model(PUBLISHED[cfg.family]["model"], cfg.family)
    train = cfg.train.model_copy(update={"batch_size": batch, "fuse_branches": fuse_branches})
    trace = trace_model(model, cfg.policy, train, batch * (2 if train.fuse_branches else 1))
    plan = plan_memory(cfg.policy, train, cfg.reward, model=model, quantization=quantization, world=1)
    reward_total, _ = reward_memory(cfg.reward, plan.batch, cfg.policy.height, cfg.policy.width, 2,
                                    train.reward_form)
    return {"transformer": trace.activations, "transformer_checkpointed": trace.activations_checkpointed,
            "vae": trace.vae_activations, "reward": reward_total - VIT_H_14.params * 2,
            "total_gb": plan.total() / GB, "checkpointing": plan.checkpointing, "quantization": quantization}


def choose_quantization(cfg: RealConfig, card_gb: float) -> tuple[str, dict]:
    """The first frozen-base storage (none, int8, nf4) whose plan fits ``card_gb``, and that plan (else nf4's)."""
    with built_in(torch.float32):  # the plan's meta trace builds in its own dtypes
        for kind in ("none", "int8", "nf4"):
            plan = planned(cfg, 1, cfg.train.fuse_branches, kind)
            if plan["total_gb"] <= card_gb:
                break
    return kind, plan


def run_family(family: str, reward, methods=METHODS, device: str = "fake", tiny: bool = False, repeats: int = 0,
               fuse_branches: bool | None = None, rollout_step: bool = True, quantization: str = "none",
               depth: int | None = None) -> dict:
    """Build ``family`` and run one update of each method; on a real device also time ``repeats`` SRPO updates.

    ``device``: ``"fake"`` (inside :func:`fake_tensors`: no memory), ``"cpu"`` or ``"cuda"`` (random bf16
    weights, inside :func:`built_in`); ``reward`` from :func:`build_reward` on the same device (one for all
    families). ``fuse_branches`` overrides the config's ``train.fuse_branches`` (both branches in one micro-step);
    the inversion branch is always on (Qwen-Image's config leaves it off, as the authors' script).
    ``quantization`` (GPU only): the frozen base's storage (``policy.base_quantization``), or ``auto``: the first
    of none / int8 / nf4 whose memory plan fits the card (FLUX.2 [dev]'s 32 B bf16 base does not fit 80 GB).
    ``depth``: after counting the published parameters, keep ``depth`` blocks of each block list
    (:func:`keep_blocks`): every shape, dtype and position id of the real model at a fraction of the trace.
    """
    with real_values():  # the configs' validators compute the training grid
        cfg = real_config(family)
    if tiny:
        cfg.policy = cfg.policy.model_copy(update={"height": TINY_SIDE, "width": TINY_SIDE})
    cfg.train = cfg.train.model_copy(update={"inversion": True, "fuse_branches": (
        cfg.train.fuse_branches if fuse_branches is None else fuse_branches)})
    fake = device == "fake"
    where = "cpu" if fake else device
    cuda = torch.device(where).type == "cuda"
    clock = Sync(where)
    result = {"family": family, "config": cfg.path.name, "resolution": [cfg.policy.height, cfg.policy.width],
              "device": device, "tiny": tiny, "fuse_branches": cfg.train.fuse_branches,
              "checkpointing": cfg.policy.gradient_checkpointing and not fake}
    if quantization == "auto":
        card_gb = torch.cuda.get_device_properties(0).total_memory / 1e9 if cuda else float("inf")
        quantization, result["planned"] = choose_quantization(cfg, card_gb)
    with no_init() if fake else contextlib.nullcontext():
        policy, transformer_cfg = build_policy(family, where, tiny)
    result["transformer_params"] = sum(p.numel() for p in policy.transformer.parameters())
    if depth is not None:
        result["blocks_kept"] = keep_blocks(policy.transformer, depth)
    if quantization != "none":  # as the trainer: the frozen base quantised before the adapter is added
        from srpo.models.quantize import quantize_frozen_base

        policy.base_quantization = quantization
        quantize_frozen_base(policy, "lora")
    result["quantization"] = quantization
    params, optimizer = setup_lora(policy, cfg)
    if result["checkpointing"]:  # the config's per-block checkpointing (on fake tensors: the full trace)
        policy.transformer.enable_gradient_checkpointing()
    text_tokens = TINY_TEXT_TOKENS if tiny else _text_tokens(family)
    store_conditioning(policy, cfg, ["prompt 0"], text_tokens)
    result.update(text_tokens=text_tokens, build_seconds=clock.lap())
    if "srpo" in methods:
        inputs: dict = {}
        hook = record_inputs(policy.transformer, inputs)
        saved = Saved(policy, reward) if fake else None
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        entry = srpo_update(policy, reward, cfg, params, optimizer, saved, rollout_step=rollout_step)
        hook.remove()
        entry["rollout_step"] = rollout_step
        entry.update(transformer_inputs=inputs, seconds=clock.lap())
        if saved is not None:
            entry["saved_bytes"] = saved.summary()
        if repeats:  # timed updates after the first (warm-up) one
            times = []
            for _ in range(repeats):
                srpo_update(policy, reward, cfg, params, optimizer, None)
                times.append(clock.lap())
            entry["seconds_per_update"] = sorted(times)[len(times) // 2]
            entry.update(mfu(family, transformer_cfg, cfg, text_tokens, entry["seconds_per_update"], where))
        if cuda:
            entry["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        result["srpo"] = entry
    if "grpo" in methods:
        saved = Saved(policy, reward) if fake else None
        entry = grpo_update(policy, reward, cfg, params, optimizer, saved)
        entry["seconds"] = clock.lap()
        if saved is not None:
            entry["saved_bytes"] = saved.summary()
        result["grpo"] = entry
    result["_cfg"] = cfg
    return result


def run_families(families=FAMILIES, methods=METHODS, device: str = "fake", tiny: bool = False, repeats: int = 0,
                 fuse_branches: bool | None = None, with_plan: bool = True, on_family=None,
                 rollout_step: bool = True, quantization: str = "none", depth: int | None = None) -> dict:
    """:func:`run_family` for each family, one reward tower for all; a family that fails is reported, not raised
    (``on_family(name, entry)`` is called after each). With ``with_plan``, the memory plan's figures next to each."""
    results = {}
    fake = device == "fake"
    start = time.perf_counter()
    with fake_tensors() if fake else built_in(torch.bfloat16):
        # CPU kernels lack bf16 antialiased bicubic resizing: a real CPU run keeps the reward in fp32
        with no_init() if fake else built_in(torch.float32 if device == "cpu" else torch.bfloat16):
            reward = build_reward("cpu" if fake else device, tiny)
        reward_seconds = time.perf_counter() - start
        for family in families:
            try:
                results[family] = run_family(family, reward, methods, device, tiny, repeats, fuse_branches,
                                             rollout_step, quantization, depth)
            except Exception as err:  # noqa: BLE001 - one family's failure (e.g. out of memory) must not hide the rest
                results[family] = {"family": family, "error": f"{type(err).__name__}: {str(err)[:400]}"}
                if torch.device("cpu" if fake else device).type == "cuda":
                    torch.cuda.empty_cache()
            if on_family is not None and with_plan is False:
                on_family(family, results[family])
    for family, entry in results.items():  # the plan traces on the meta device: outside the fake mode
        cfg = entry.pop("_cfg", None)
        if with_plan and cfg is not None and not tiny and "planned" not in entry:
            t0 = time.perf_counter()
            entry["planned"] = planned(cfg, 1, entry["fuse_branches"], entry.get("quantization", "none"))
            entry["plan_seconds"] = time.perf_counter() - t0
        srpo = entry.get("srpo", {})
        if "peak_memory_gb" in srpo and "planned" in entry:  # measured on the card against the plan's total
            srpo["peak_over_planned"] = srpo["peak_memory_gb"] / entry["planned"]["total_gb"]
        if on_family is not None and with_plan:
            on_family(family, entry)
    return {"reward_build_seconds": reward_seconds, "families": results}


def _text_tokens(family: str) -> int:
    from srpo.models.published_configs import PUBLISHED

    return PUBLISHED[family]["text_tokens"]


def mfu(family: str, transformer_cfg: dict, cfg: RealConfig, text_tokens: int, seconds: float, device: str) -> dict:
    """Counted FLOPs of the update (the FLOP formula of :mod:`benchmarks.family_sizes`: 3 forward-equivalents per
    micro-step, 2 micro-steps with the inversion branch), over seconds and the card's peak."""
    from benchmarks.family_sizes import flop_terms
    from benchmarks.gpu_step import flux_flop_terms

    p_tok, attention = flux_flop_terms(transformer_cfg) if family == "flux" else flop_terms(family, transformer_cfg)
    tokens = (cfg.policy.height // 16) * (cfg.policy.width // 16) + text_tokens
    forward = 2 * p_tok * tokens + attention * tokens ** 2
    micro = 2 if cfg.train.inversion else 1
    peak, source = _card_peak(device)
    return {"forward_flops": forward, "update_flops": 3 * micro * forward, "peak_flops": peak, "peak_source": source,
            "mfu": 3 * micro * forward / seconds / peak}


@functools.cache
def _card_peak(device: str) -> tuple[float, str]:
    from benchmarks.gpu_step import card_peak

    return card_peak("cpu" if device == "cpu" else "cuda", tiny=device == "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", action="append", choices=FAMILIES, help="one family (repeatable; default all)")
    parser.add_argument("--method", action="append", choices=METHODS, help="one method (repeatable; default both)")
    parser.add_argument("--device", default="fake", choices=("fake", "cpu", "cuda"))
    parser.add_argument("--tiny", action="store_true", help="tiny configs of each family (check the script anywhere)")
    parser.add_argument("--repeats", type=int, default=0, help="timed SRPO updates after the first (real devices)")
    parser.add_argument("--no-plan", action="store_true", help="skip the memory plan's figures")
    parser.add_argument("--fuse-branches", action="store_true", help="both SRPO branches in one micro-step")
    parser.add_argument("--quantization", default="none", choices=("none", "int8", "fp8", "nf4", "auto"),
                        help="GPU: the frozen base's storage; auto: the first that the memory plan fits on the card")
    parser.add_argument("--depth", type=int, default=None, help="keep this many blocks of each block list (the "
                        "first ones and the last): a quick trace of the real geometry; no planned-vs-traced table")
    parser.add_argument("--json-out", default=None, help="also write the JSON result here, after each family")
    args = parser.parse_args()
    families, methods = args.family or list(FAMILIES), tuple(args.method or METHODS)
    results = {"benchmark": "real_size", "device": args.device, "tiny": args.tiny, "methods": list(methods),
               "families": {}, "machine": machine()}
    start = time.perf_counter()

    def report(family: str, entry: dict) -> None:
        results["families"][family] = entry
        print(family, {k: v for k, v in entry.items() if k not in ("srpo", "grpo")}, flush=True)
        if args.json_out:
            write_json({**results, "partial": True, "total_seconds": time.perf_counter() - start}, args.json_out)

    if args.depth is not None and args.depth < 1:
        parser.error(f"--depth {args.depth}: keep at least 1 block of each block list")
    out = run_families(families, methods, args.device, args.tiny, args.repeats,
                       True if args.fuse_branches else None, not args.no_plan, report,
                       quantization=args.quantization, depth=args.depth)
    results.update(out, total_seconds=time.perf_counter() - start)
    if not args.tiny and not args.no_plan and args.depth is None:
        results["planned_vs_traced"] = planned_vs_traced(results["families"])
    emit(results, args.json_out)


def planned_vs_traced(families: dict) -> dict:
    """Per family: the largest SRPO micro-step's saved bytes (GB) against the plan's, by component."""
    table = {}
    for family, entry in families.items():
        if "planned" not in entry or "saved_bytes" not in entry.get("srpo", {}):
            continue
        traced, plan = entry["srpo"]["saved_bytes"], entry["planned"]
        row = {}
        for part in ("transformer", "transformer_checkpointed", "vae", "reward"):
            row[part] = {"traced_gb": traced[part] / 1e9, "planned_gb": plan[part] / 1e9,
                         "traced_over_planned": traced[part] / plan[part] if plan[part] else None}
        table[family] = row
    return table


if __name__ == "__main__":
    main()
