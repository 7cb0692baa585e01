"""The memory plan of a training run, per GPU, before any weight loads (``python -m ops.validate`` prints it).

The family's transformer and VAE are built from their configs on the meta device (no memory,
no weights) and one training micro-step's forward (transformer velocity, VAE decode, the
reward's image tower) runs on meta tensors under ``torch.autograd.graph.saved_tensors_hooks``:
the bytes autograd keeps for the backward are the activations, counted per transformer block so
that per-block checkpointing (keep each block's inputs, recompute one block at a time) follows
from the same trace. The transformer's repeated blocks are traced once per distinct (block, input)
description and their counted effect replayed for the identical blocks that follow
(:mod:`srpo.training.block_replay`, which says why the numbers are exactly those of a block-by-block
trace); the LoRA adapter is built on meta too. Parameters, gradients and AdamW's two moments come from the parameter
counts: the LoRA adapter (or the full transformer) trains in fp32, the frozen base is stored in
``policy.frozen_dtype`` or ``policy.base_quantization``'s bytes per weight; FSDP (``train.distributed:
fsdp`` over ``train.num_processes``) divides the transformer's weights, gradients and moments by
the world size and adds one gathered block.

What the plan leaves out (and the comparison with measured CPU peaks in the tests shows): the
backward's transient buffers (about one block's activations), allocator fragmentation on a GPU,
and the CUDA context (~0.5 GB); ``MARGIN`` covers the first two. The text encoders are listed but not
in the total: the training process reads the rollout set's stored conditioning and never loads them.

The inference plan (:func:`plan_inference`, the rollout step and evaluation: no grad) counts the weights
in the dtype those steps load (:func:`srpo.models.families.inference_config`), the text encoders, the
peak bytes alive during one transformer forward (repeated blocks replayed likewise) and one VAE decode on meta
(:class:`LiveBytesPeak`), the decoded images and every sample's noise and latent.
:mod:`srpo.training.fit` checks both plans against the device a step finds.

Model configs: a local or built-in model folder's own ``config.json`` files; for a hub id (no
download here) the published configs of the family's flagship model
(:data:`srpo.models.published_configs.PUBLISHED`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.utils._python_dispatch

from srpo.models.base import TextCond
from srpo.models.families import adapter_class, family_named, read_model_index, resolve_location
from srpo.models.published_configs import PUBLISHED
from srpo.models.quantize import BYTES_PER_WEIGHT
from srpo.rewards.registry import REWARDS, VIT_H_14
from srpo.training import block_replay
from srpo.training.block_replay import BlockReplay

GB = 1e9
MARGIN = 1.10  # transient backward buffers and fragmentation, on top of what autograd saves
CUDA_CONTEXT_GB = 0.5

#: Parameters of the evaluation metrics a guard may hold in the training process (frozen, no grad):
#: the ViT-H-14 pair (HPS, PickScore), CLIP ViT-L/14 (clip_score), ImageReward (BLIP ViT-L + BERT-base
#: with cross-attention), Aesthetic v2.5 (SigLIP so400m) and HPSv3.
GUARD_METRIC_PARAMS = {**{name: REWARDS[name].tower.params for name in ("hpsv2.1", "pickscore", "aesthetic_v2.5", "hpsv3")},
                       "sgp_hps": REWARDS["hpsv2.1"].tower.params, "clip_score": 428e6, "imagereward": 447e6}


@dataclass
class ModelDescription:
    """What the plan needs of a model: the family, its component configs and its text length."""

    family: str
    transformer: dict
    vae_class: str
    vae: dict
    text_tokens: int
    text_encoder_params: float = 0.0
    source: str = ""


@dataclass
class MemoryPlan:
    """Bytes per GPU of one training run, by component (see the module docstring)."""

    family: str
    resolution: tuple[int, int]
    batch: int  # samples per micro-step and process (x2 with fused branches)
    finetune: str
    world: int  # FSDP shards (1 = unsharded)
    quantization: str
    checkpointing: bool
    transformer_weights: float
    trainable_params: int
    gradients: float
    optimizer: float
    activations: float  # without per-block checkpointing
    activations_checkpointed: float  # with it
    vae: float  # VAE weights + decode activations
    reward: float  # reward weights + image-tower activations
    text_encoders: float  # loaded by the rollout step only (not in the total)
    guard: float = 0.0  # the guard's metric models (weights, no grad) held next to the policy
    method_copies: float = 0.0  # copies of the trained weights the method keeps (an old policy, an EMA, a base)
    notes: list[str] = field(default_factory=list)

    @property
    def chosen_activations(self) -> float:
        return self.activations_checkpointed if self.checkpointing else self.activations

    def total(self, with_text_encoders: bool = False) -> float:
        """Planned peak bytes: everything above, times :data:`MARGIN`, plus the CUDA context.

        The text encoders are left out: the training process runs on the rollout set's stored
        conditioning and never loads them (``with_text_encoders`` counts them, as a process that
        encodes prompts itself would hold them)."""
        body = (self.transformer_weights + self.gradients + self.optimizer + self.chosen_activations + self.vae
                + self.reward + self.guard + self.method_copies + (self.text_encoders if with_text_encoders else 0.0))
        return body * MARGIN + CUDA_CONTEXT_GB * GB

    def rows(self) -> list[tuple[str, float]]:
        return [("transformer weights", self.transformer_weights), ("gradients", self.gradients),
                ("AdamW moments", self.optimizer),
                ("activations" + (" (per-block checkpointing)" if self.checkpointing else ""), self.chosen_activations),
                ("VAE (weights + decode)", self.vae), ("reward (weights + image tower)", self.reward),
                ("guard metric models", self.guard), ("method's weight copies (old/EMA/base)", self.method_copies),
                ("text encoders (rollout step only)", self.text_encoders)]

    def describe(self) -> str:
        """The plan as printable lines, one component a line, in GB."""
        h, w = self.resolution
        head = (f"memory plan per GPU: {self.family} {h}x{w}, batch {self.batch}, {self.finetune}"
                f"{f' ({self.trainable_params / 1e6:.1f}M trainable)' if self.finetune == 'lora' else ''}, "
                f"base {self.quantization}, FSDP x{self.world}, checkpointing {'on' if self.checkpointing else 'off'}")
        lines = [head] + [f"  {name:<40} {value / GB:8.3f} GB" for name, value in self.rows()]
        lines.append(f"  {'activations without / with checkpointing':<40} {self.activations / GB:8.2f} / "
                     f"{self.activations_checkpointed / GB:.2f} GB")
        lines.append(f"  {'total (x%.2f margin + CUDA context)' % MARGIN:<40} {self.total() / GB:8.2f} GB")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


# ---- model descriptions -------------------------------------------------------------------
def _component_config(folder: Path, name: str) -> dict:
    config = json.loads((folder / name / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _text_tokens(folder: Path) -> int:
    """The longest tokenizer's padded length, capped at 512 as every adapter caps it."""
    lengths = []
    for cfg in folder.glob("tokenizer*/tokenizer_config.json"):
        lengths.append(int(json.loads(cfg.read_text()).get("model_max_length", 512)))
    return min(512, max(lengths)) if lengths else 512


@functools.cache
def remote_configs(url: str) -> Path:
    """A local folder with only the configuration files of the model folder at ``url`` (``s3://...``): its
    ``model_index.json`` and each component's ``config.json`` / ``tokenizer_config.json``, never a weight file."""
    import tempfile

    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    out = Path(tempfile.mkdtemp(prefix="srpo-plan-configs-"))
    fs.get(f"{root}/model_index.json", str(out / "model_index.json"))
    for entry in fs.ls(root, detail=True):
        if entry["type"] != "directory":
            continue
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        for file in ("config.json", "tokenizer_config.json"):
            if fs.exists(f"{root}/{name}/{file}"):
                (out / name).mkdir(exist_ok=True)
                fs.get(f"{root}/{name}/{file}", str(out / name / file))
    return out


def describe_model(pretrained: str, family: str | None = None) -> ModelDescription:
    """The :class:`ModelDescription` of a config's ``policy.pretrained`` (folder, ``s3://`` prefix or built-in,
    reading configuration files only; a hub id: :data:`PUBLISHED`)."""
    from srpo.io import is_url

    try:
        source = remote_configs(pretrained) if is_url(pretrained) else Path(resolve_location(pretrained))
        local = source.is_dir()
    except Exception:  # noqa: BLE001 - an unreachable hub id falls back to the published configs
        local = False
    if local:
        index = read_model_index(str(source))
        from srpo.models.families import family_of_pipeline

        family = family or family_of_pipeline(index.get("_class_name", ""))
        return ModelDescription(family, _component_config(source, "transformer"), index["vae"][1],
                                _component_config(source, "vae"), _text_tokens(source), source=str(source))
    if family is None:
        family = next((f for f, p in PUBLISHED.items() if p["model"] == pretrained), None)
    if family not in PUBLISHED:
        raise ValueError(f"policy.pretrained {pretrained!r} is not a local folder and policy.family is not set: the "
                         f"memory plan needs one of {sorted(PUBLISHED)} (set policy.family) or a local model folder")
    p = PUBLISHED[family]
    return ModelDescription(family, p["transformer"], p["vae_class"], p["vae"], p["text_tokens"],
                            p["text_encoder_params"], source=p["model"])


def meta_policy(model: ModelDescription):
    """The family's :class:`~srpo.models.base.Policy` with its transformer and VAE on the meta device, no text encoders."""
    import diffusers

    spec = family_named(model.family)
    with torch.device("meta"):
        transformer = getattr(diffusers, spec.transformer_class).from_config(model.transformer)
        vae = getattr(diffusers, model.vae_class).from_config(model.vae)
    pipeline_cls = getattr(diffusers, spec.pipeline_class)
    names = [n for n in inspect.signature(pipeline_cls.__init__).parameters if n != "self"]
    parts = {n: None for n in names}
    parts.update(transformer=transformer, vae=vae, scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
    pipe = pipeline_cls(**parts)
    policy = adapter_class(model.family)(pipe, "meta")
    policy.autocast = contextlib.nullcontext  # no autocast on meta: the trace runs in the compute dtype itself
    return policy


# ---- counting -----------------------------------------------------------------------------
class SavedTensors:
    """Bytes autograd saves for the backward, excluding parameters, split by the enclosing block."""

    def __init__(self, params: set[int]):
        self.params = params
        self.seen: dict[int, torch.Tensor] = {}  # kept alive so that ids stay unique
        self.by_block: dict[int, int] = {}
        self.block_inputs: dict[int, int] = {}
        self.block: int | None = None
        self.outside = 0

    def pack(self, t: torch.Tensor):
        base = t._base if t._base is not None else t
        if id(base) not in self.params and id(t) not in self.params and id(base) not in self.seen:
            self.seen[id(base)] = base
            nbytes = base.numel() * base.element_size()
            if self.block is None:
                self.outside += nbytes
            else:
                self.by_block[self.block] = self.by_block.get(self.block, 0) + nbytes
        return t

    def watch_blocks(self, blocks: list[torch.nn.Module]) -> list:
        handles = []
        for i, block in enumerate(blocks):
            def enter(module, args, kwargs, i=i):
                self.block = i
                self.block_inputs[i] = sum(a.numel() * a.element_size() for a in [*args, *kwargs.values()]
                                           if isinstance(a, torch.Tensor) and a.requires_grad)

            def leave(module, args, kwargs, output):
                self.block = None

            handles += [block.register_forward_pre_hook(enter, with_kwargs=True),
                        block.register_forward_hook(leave, with_kwargs=True)]
        return handles

    @property
    def total(self) -> int:
        return self.outside + sum(self.by_block.values())

    @property
    def checkpointed(self) -> int:
        """Saved bytes with per-block checkpointing: each block keeps its inputs; one block is recomputed at a time."""
        blocks = list(self.by_block.values())
        return self.outside + sum(self.block_inputs.values()) + (max(blocks) if blocks else 0)


def meta_cond(policy, model: ModelDescription, batch: int, dtype: torch.dtype, latent_shape=None):
    """The family's conditioning of ``batch`` prompts of the model's text length, on the meta device.

    Meta rows are put in the policy's prompt cache, so the family's own ``encode_prompts`` builds it. An edit
    family's prompts each carry a meta source latent of ``latent_shape`` [C, h, w] (a source at the training
    size: its tokens count as many again as the image's, ``source_tokens`` of the published configs).
    """
    t = model.transformer
    width = t.get("joint_attention_dim") or t.get("cap_feat_dim")
    pooled_dim = t.get("pooled_projection_dim")

    def meta_rows(missing: list[str]) -> list[tuple]:
        return [(torch.empty(model.text_tokens, width, device="meta", dtype=dtype),  # [L, D]
                 torch.empty(pooled_dim, device="meta", dtype=dtype) if pooled_dim else None)  # [P]
                for _ in missing]

    prompts = [f"prompt {i}" for i in range(batch)]
    if not policy.edits_images or latent_shape is None:
        policy.prompt_cache.lookup(prompts, meta_rows)
        return policy.encode_prompts(prompts)
    latents = torch.empty(batch, *latent_shape, device="meta", dtype=dtype)  # [B, C, h, w] source latents
    if hasattr(policy, "pair_keys"):  # Qwen-Image-Edit: text rows keyed by (instruction, source)
        from srpo.models.qwen_image_edit import EditSources

        sources = EditSources([latents], None, [f"source {i}" for i in range(batch)])
        policy.prompt_cache.lookup(policy.pair_keys(prompts, sources), meta_rows)
        return policy.encode_prompts(prompts, sources)
    policy.prompt_cache.lookup(prompts, meta_rows)
    return policy.encode_prompts(prompts, latents)


def _flash_like_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """SDPA as the fused kernels save it (q, k, v, out and a logsumexp; no [L, L] matrix): meta's SDPA is the math path."""
    out, _lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
    return out


@contextlib.contextmanager
def fused_attention_on_meta():
    """Route ``F.scaled_dot_product_attention`` through the fused kernel's op while tracing on meta."""
    original = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _flash_like_sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


def _adapter_in_base_dtype(transformer: torch.nn.Module) -> None:
    """Cast each LoRA layer's adapter to its base layer's floating dtype, as peft does when it moves an adapter built
    on the CPU to a meta base layer (it leaves one built on meta as it is): the trace then computes what it did."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        dtype = module.get_base_layer().weight.dtype
        if not (dtype.is_floating_point or dtype.is_complex):
            continue
        for name in module.adapter_layer_names + module.other_param_names:
            layers = getattr(module, name, None)
            if isinstance(layers, (torch.nn.ModuleDict, torch.nn.ParameterDict)):
                for key in list(layers.keys()):
                    item = layers[key]
                    if getattr(item, "dtype", None) is None or item.dtype.is_floating_point:
                        layers[key] = item.to(dtype=dtype)


def trace_micro_step(policy, model: ModelDescription, batch: int, height: int, width: int, finetune: str,
                     lora_rank: int, targets: list[str], compute_dtype: torch.dtype) -> tuple[SavedTensors, SavedTensors, int]:
    """Saved bytes of one micro-step's transformer forward and VAE decode on meta; and the trainable count.

    Identical repeated blocks replay their recorded saved bytes (:class:`~srpo.training.block_replay.BlockReplay`)."""
    from srpo.training.lora import add_lora

    transformer = policy.transformer
    if finetune == "lora":
        with torch.device("meta"):  # peft builds the adapter on the default device and initialises it there: not on the CPU
            trainable = sum(p.numel() for p in add_lora(transformer, lora_rank, lora_rank, targets))
        _adapter_in_base_dtype(transformer)
    else:
        transformer.requires_grad_(True)
        trainable = sum(p.numel() for p in transformer.parameters())
    params = {id(p) for p in transformer.parameters()} | {id(p) for p in policy.pipe.vae.parameters()}
    c, h, w = policy.latent_shape(height, width)
    x = torch.empty(batch, c, h, w, device="meta", dtype=compute_dtype)  # [B, C, h, w]
    sigma = torch.full((batch,), 0.5, device="meta")
    cond = meta_cond(policy, model, batch, compute_dtype, (c, h, w))
    blocks = [m for m in transformer.modules() if type(m).__name__ in policy.block_classes]
    model_saved, vae_saved = SavedTensors(params), SavedTensors(params)
    handles = model_saved.watch_blocks(blocks)
    try:
        with (fused_attention_on_meta(), torch.autograd.graph.saved_tensors_hooks(model_saved.pack, lambda t: t),
              BlockReplay(transformer, policy.block_classes, saved=model_saved)):
            v = policy.velocity(x, sigma, cond, 1.0)  # [B, C, h, w]
        x0 = (x - 0.5 * v).to(policy.pipe.vae.dtype)
        with torch.autograd.graph.saved_tensors_hooks(vae_saved.pack, lambda t: t):
            policy._vae_decode(policy.to_vae_latents(x0))  # the family's decode (Qwen-Image's VAE is 3-D)
    finally:
        for handle in handles:
            handle.remove()
    return model_saved, vae_saved, trainable


# ---- the plan -----------------------------------------------------------------------------
def _bytes(dtype_name: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype_name)).element_size()


def forwards_per_branch(reward_name: str, form: str) -> int:
    """Reward forwards one branch keeps in the graph: 1 (feature and image-only rewards; image_relative
    scores its clean and noised copies as one batch of 2, counted as 2), or a joint reward's prompt variants."""
    from srpo.srp import FORM_INPUTS

    if form == "image_relative":
        return 2
    return len(FORM_INPUTS[form]) if getattr(REWARDS.get(reward_name), "kind", None) == "joint" else 1


def reward_memory(reward_cfg, batch: int, height: int, width: int, compute_bytes: int,
                  form: str = "weighted") -> tuple[float, str]:
    """Reward weights plus the saved activations of its forwards for ``batch`` images; and how it was counted.

    ``reward_cfg``: a :class:`~srpo.rewards.config.RewardConfig` (used with reward form ``form``) or a
    multi-reward (``MultiRewardConfig``: each distinct model's weights once, every term's activations,
    all held until the micro-step's backward). Published rewards by formula (their tower in the rewards
    registry, :data:`srpo.rewards.registry.REWARDS`), built-in ones traced.
    """
    entries = getattr(reward_cfg, "rewards", None)
    if entries is not None:
        weights: dict[str, float] = {}
        activations, hows = 0.0, set()
        for entry in entries:
            w, a, how = _one_reward(entry.reward, batch, height, width, compute_bytes, entry.form)
            weights[entry.reward.model_dump_json()] = w
            activations += a
            hows.add(how)
        return sum(weights.values()) + activations, " + ".join(sorted(hows))
    w, a, how = _one_reward(reward_cfg, batch, height, width, compute_bytes, form)
    return w + a, how


def _one_reward(reward_cfg, batch: int, height: int, width: int, compute_bytes: int,
                form: str) -> tuple[float, float, str]:
    """(weight bytes, activation bytes, how counted) of one reward used with ``form``."""
    checkpoint = getattr(reward_cfg, "checkpoint", None) or ""
    name = getattr(reward_cfg, "name", "hpsv2.1")
    forwards = forwards_per_branch(name, form)
    if reward_cfg is None or not checkpoint.startswith("builtin:"):
        spec = REWARDS.get(name)
        tower = (spec.tower if spec is not None else None) or VIT_H_14
        activations = tower.activation_bytes_per_image * compute_bytes / 4 * batch * forwards
        return tower.params * compute_bytes, activations, f"{tower.label} formula"
    from srpo.rewards import load_reward
    from srpo.rewards.combine import reward_kind

    reward = load_reward(reward_cfg).requires_grad_(False)
    saved = SavedTensors({id(p) for p in reward.parameters()})
    images = torch.rand(batch, 3, height, width, requires_grad=True)  # [B, 3, H, W]
    kind = reward_kind(reward)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        if kind == "joint":
            reward.score(images, ["a photo"] * batch)
        elif kind == "image_only":
            reward.score_images(images)
        else:
            reward.image_features(images)
    weights = sum(p.numel() * p.element_size() for p in reward.parameters())
    return weights, saved.total * forwards, "traced"


@dataclass
class Trace:
    """What the meta trace of one micro-step gives (independent of quantisation, FSDP and checkpointing)."""

    family: str
    trainable: int
    frozen_linear: int  # frozen parameters in quantisable nn.Linear weights, per kind
    frozen_linear_nf4: int
    frozen_other: int
    largest_block: int  # parameters of the largest repeated block (what FSDP gathers)
    activations: int
    activations_checkpointed: int
    vae_params: int
    vae_activations: int


_TRACES: dict[tuple, Trace] = {}


def trace_model(model: ModelDescription, policy_cfg, train_cfg, batch: int) -> Trace:
    """The :class:`Trace` of a model and run shape (cached per process: planning variants reuse it)."""
    from srpo.models.quantize import quantizable_linears

    compute = "bfloat16" if policy_cfg.autocast == "bfloat16" else policy_cfg.dtype
    frozen = policy_cfg.frozen_dtype or compute
    key = (model.source, model.family, json.dumps(model.transformer, sort_keys=True), batch, policy_cfg.height,
           policy_cfg.width, compute, frozen, train_cfg.finetune, train_cfg.lora_rank,
           tuple(train_cfg.lora_targets or ()), block_replay.REPLAY)
    if key in _TRACES:
        return _TRACES[key]
    policy = meta_policy(model)
    policy.transformer.to(getattr(torch, compute))
    policy.pipe.vae.to(getattr(torch, frozen))
    targets = list(train_cfg.lora_targets or policy.lora_targets)
    saved, vae_saved, trainable = trace_micro_step(policy, model, batch, policy_cfg.height, policy_cfg.width,
                                                   train_cfg.finetune, train_cfg.lora_rank, targets,
                                                   getattr(torch, compute))
    transformer = policy.transformer
    frozen_params = {id(p): p.numel() for p in transformer.parameters() if not p.requires_grad}

    def in_linears(kind: str) -> int:
        return sum(frozen_params.get(id(m.weight), 0) for _, m in quantizable_linears(transformer, kind))

    blocks = [m for m in transformer.modules() if type(m).__name__ in policy.block_classes]
    trace = Trace(model.family, trainable, in_linears("int8"), in_linears("nf4"),
                  sum(frozen_params.values()) - in_linears("int8"),
                  max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0),
                  saved.total, saved.checkpointed, sum(p.numel() for p in policy.pipe.vae.parameters()),
                  vae_saved.total)
    _TRACES[key] = trace
    return trace


def guard_memory(guard_cfg, metrics: dict | None, compute_bytes: int) -> tuple[float, list[str]]:
    """Weight bytes of the evaluation models ``train.guard`` scores with, and their names.

    The training reward (``reward``), the image statistics and the world grader hold no model of
    their own; another name is a key of ``metrics`` (the pipeline's metric configs: its ``name``
    says which model) or a metric name itself. Unknown names count nothing (an extra reward
    loads like the training reward, which the plan counts once).
    """
    if guard_cfg is None:
        return 0.0, []
    total, held = 0.0, []
    for name in guard_cfg.metrics:
        kind = getattr((metrics or {}).get(name), "name", name)
        if kind in GUARD_METRIC_PARAMS:
            total += GUARD_METRIC_PARAMS[kind] * compute_bytes
            held.append(name)
    return total, held


def scorer_memory(scorers, compute_bytes: int) -> tuple[float, list[str]]:
    """Weight bytes of the published scoring models an evaluation holds next to the policy, and their names.

    ``scorers``: reward and metric configs (anything with ``name`` and ``checkpoint``); each published
    model (:data:`GUARD_METRIC_PARAMS`) counts once by kind and checkpoint, built-in tiny ones nothing."""
    seen, held, total = set(), [], 0.0
    for cfg in scorers:
        kind, checkpoint = getattr(cfg, "name", None), str(getattr(cfg, "checkpoint", None) or "")
        if kind not in GUARD_METRIC_PARAMS or checkpoint.startswith("builtin:") or (kind, checkpoint) in seen:
            continue
        seen.add((kind, checkpoint))
        total += GUARD_METRIC_PARAMS[kind] * compute_bytes
        held.append(kind)
    return total, held


def plan_memory(policy_cfg, train_cfg, reward_cfg=None, *, quantization: str | None = None,
                world: int | None = None, checkpointing: bool | None = None, batch: int | None = None,
                model: ModelDescription | None = None, metrics: dict | None = None) -> MemoryPlan:
    """The per-GPU :class:`MemoryPlan` of a run's configs; keyword overrides try other settings.

    ``metrics``: the pipeline's metric configs by name, which a ``train.guard`` may score with."""
    quantization = quantization if quantization is not None else policy_cfg.base_quantization
    checkpointing = policy_cfg.gradient_checkpointing if checkpointing is None else checkpointing
    world = world if world is not None else (train_cfg.num_processes * train_cfg.num_nodes
                                              if train_cfg.distributed == "fsdp" else 1)
    from srpo.training.methods import method_class

    row = method_class(train_cfg.method)
    batch = (batch or row.micro_batch(row.configure(train_cfg))) * (2 if train_cfg.fuse_branches else 1)
    model = model or describe_model(policy_cfg.pretrained, policy_cfg.family)
    compute = "bfloat16" if policy_cfg.autocast == "bfloat16" else policy_cfg.dtype
    frozen_bytes = _bytes(policy_cfg.frozen_dtype or compute)
    t = trace_model(model, policy_cfg, train_cfg, batch)
    master = 4  # the adapter / full weights train in fp32
    if train_cfg.finetune == "lora":
        linear = t.frozen_linear_nf4 if quantization == "nf4" else t.frozen_linear
        per_weight = BYTES_PER_WEIGHT[quantization] or frozen_bytes
        weights = linear * per_weight + (t.frozen_linear + t.frozen_other - linear) * frozen_bytes + t.trainable * master
    else:
        weights = t.trainable * _bytes(policy_cfg.dtype)
    notes = []
    if world > 1:
        weights = weights / world + t.largest_block * _bytes(compute)
        notes.append(f"FSDP over {world}: weights, gradients and moments / {world} plus one gathered block")
    h, w = policy_cfg.height, policy_cfg.width
    reward, how = reward_memory(reward_cfg, batch, h, w, _bytes(compute), train_cfg.reward_form)
    if how != "traced":
        notes.append(f"reward: {how} (published towers: srpo.rewards.registry.REWARDS)")
    guard, held = guard_memory(train_cfg.guard, metrics, _bytes(compute))
    if held:
        notes.append(f"guard: {', '.join(held)} held in the training process (frozen weights)")
    copies = row.weight_copies(row.configure(train_cfg))
    if copies:
        notes.append(f"method {train_cfg.method}: {copies} cop{'y' if copies == 1 else 'ies'} of the trained weights (fp32"
                     f"{f', sharded / {world}' if world > 1 else ''})")
    text = model.text_encoder_params * frozen_bytes
    if text:
        notes.append("text encoders: loaded by the rollout step only (training reads the stored conditioning); "
                     "not in the total")
    return MemoryPlan(
        family=model.family, resolution=(h, w), batch=batch, finetune=train_cfg.finetune, world=world,
        quantization=quantization, checkpointing=checkpointing, transformer_weights=weights,
        trainable_params=t.trainable, gradients=t.trainable * master / world,
        optimizer=2 * t.trainable * master / world, activations=float(t.activations),
        activations_checkpointed=float(t.activations_checkpointed),
        vae=t.vae_params * frozen_bytes + t.vae_activations, reward=reward, text_encoders=text, guard=guard,
        method_copies=copies * t.trainable * master / world, notes=notes)


def fitting_settings(policy_cfg, train_cfg, reward_cfg, gpu_gb: float, model: ModelDescription | None = None,
                     max_world: int = 8, metrics: dict | None = None) -> list[str]:
    """Settings (checkpointing, quantisation, FSDP world) under which the run fits ``gpu_gb``, cheapest change first."""
    model = model or describe_model(policy_cfg.pretrained, policy_cfg.family)
    kinds = ["none", "int8", "nf4"] if train_cfg.finetune == "lora" else ["none"]
    found = []
    for world in [w for w in (1, 2, 4, 8) if w <= max_world]:
        for checkpointing in (False, True):
            for kind in kinds:
                plan = plan_memory(policy_cfg, train_cfg, reward_cfg, quantization=kind, world=world,
                                   checkpointing=checkpointing, model=model, metrics=metrics)
                if plan.total() <= gpu_gb * GB:
                    found.append(f"policy.gradient_checkpointing: {str(checkpointing).lower()}, "
                                 f"policy.base_quantization: {kind}" + (
                                     f", train.distributed: fsdp, train.num_processes: {world}" if world > 1 else "")
                                 + f" ({plan.total() / GB:.1f} GB)")
        if found:
            return found[:3]
    return found


def check_plan_fits(plan: MemoryPlan, policy_cfg, train_cfg, reward_cfg=None, metrics: dict | None = None) -> None:
    """Refuse a run whose plan exceeds ``policy.gpu_memory_gb``, naming settings that would fit."""
    gpu = policy_cfg.gpu_memory_gb
    if gpu is None or plan.total() <= gpu * GB:
        return
    fits = fitting_settings(policy_cfg, train_cfg, reward_cfg, gpu, metrics=metrics)
    fix = ("; ".join(fits) if fits else "none found up to FSDP x8: lower the resolution or the batch size")
    raise ValueError(f"policy.gpu_memory_gb = {gpu}: the run plans {plan.total() / GB:.1f} GB per GPU; settings "
                     f"that fit: {fix}")


# ---- the inference plan (rollouts, evaluation) ----------------------------------------------
class LiveBytesPeak(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of the tensors an op sequence creates and keeps alive (no-grad forwards on meta)."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self.tracked: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.tracked.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import weakref

        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        for t in outputs:
            if isinstance(t, torch.Tensor) and t._base is None and id(t) not in self.tracked:
                nbytes = t.numel() * t.element_size()
                self.tracked.add(id(t))
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._release, id(t), nbytes)
        return out


def text_encoder_params(model: ModelDescription) -> float:
    """Parameters of a model folder's text encoders, built from their ``config.json`` on the meta device."""
    if model.text_encoder_params or not model.source or not Path(model.source).is_dir():
        return model.text_encoder_params
    return _folder_text_encoder_params(model.source)


@functools.cache
def _folder_text_encoder_params(source: str) -> float:
    import transformers

    folder, total = Path(source), 0
    for name, entry in read_model_index(str(folder)).items():
        if not (name.startswith("text_encoder") and isinstance(entry, list) and entry[0] == "transformers"):
            continue
        config = transformers.AutoConfig.from_pretrained(folder / name)
        with torch.device("meta"):
            encoder = getattr(transformers, entry[1])._from_config(config)
        total += sum(p.numel() for p in encoder.parameters())
    return float(total)


@dataclass
class InferencePlan:
    """Bytes on the device of a no-grad generation step (rollouts, evaluation): weights and the peak forward."""

    family: str
    resolution: tuple[int, int]
    batch: int  # samples per forward (x2 with true CFG)
    dtype: str  # what the transformer is held in
    transformer_weights: float
    text_encoders: float
    vae: float  # VAE weights
    activations: float  # the larger of the transformer's and the VAE decode's no-grad peaks
    images: float  # the batch's decoded images, fp32 (0 when the step keeps latents only)
    latents: float  # every sample's noise and clean latent, held to the end of the step
    cuda: bool = True
    scorers: float = 0.0  # evaluation: the published reward / metric models' weights held next to the policy

    def total(self) -> float:
        body = (self.transformer_weights + self.text_encoders + self.vae + self.activations + self.images
                + self.latents + self.scorers)
        return body * MARGIN + (CUDA_CONTEXT_GB * GB if self.cuda else 0.0)

    def rows(self) -> list[tuple[str, float]]:
        return [(f"transformer weights ({self.dtype})", self.transformer_weights),
                ("text encoders", self.text_encoders), ("VAE weights", self.vae),
                ("activations (no-grad peak)", self.activations), ("decoded images (fp32)", self.images),
                ("noise and latents of every sample", self.latents)] + (
                    [("reward and metric models", self.scorers)] if self.scorers else [])

    def describe(self) -> str:
        h, w = self.resolution
        lines = [f"inference plan per device: {self.family} {h}x{w}, batch {self.batch}, no grad"]
        lines += [f"  {name:<40} {value / GB:8.3f} GB" for name, value in self.rows()]
        margin = f"x{MARGIN:.2f} margin" + (" + CUDA context" if self.cuda else "")
        lines.append(f"  {'total (' + margin + ')':<40} {self.total() / GB:8.2f} GB")
        return "\n".join(lines)


_INFERENCE_TRACES: dict[tuple, tuple[int, int, int, int]] = {}


def _inference_trace(model: ModelDescription, batch: int, height: int, width: int,
                     dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(transformer params, VAE params, transformer peak bytes, decode peak bytes) of no-grad forwards on meta.

    Identical repeated blocks replay their recorded peak and outputs (:class:`~srpo.training.block_replay.BlockReplay`)."""
    key = (model.source, model.family, json.dumps(model.transformer, sort_keys=True), batch, height, width, str(dtype),
           block_replay.REPLAY)
    if key not in _INFERENCE_TRACES:
        policy = meta_policy(model)
        policy.transformer.to(dtype)
        policy.pipe.vae.to(dtype)
        c, h, w = policy.latent_shape(height, width)
        x = torch.empty(batch, c, h, w, device="meta", dtype=dtype)  # [B, C, h, w]
        sigma = torch.full((batch,), 0.5, device="meta")
        cond = meta_cond(policy, model, batch, dtype, (c, h, w))
        with (torch.no_grad(), fused_attention_on_meta(), LiveBytesPeak() as forward,
              BlockReplay(policy.transformer, policy.block_classes, live=forward)):
            policy.velocity(x, sigma, cond, 1.0)
        with torch.no_grad(), LiveBytesPeak() as decode:
            policy._vae_decode(policy.to_vae_latents(x[:1]))  # the step decodes one image at a time at the most
        _INFERENCE_TRACES[key] = (sum(p.numel() for p in policy.transformer.parameters()),
                                  sum(p.numel() for p in policy.pipe.vae.parameters()), forward.peak, decode.peak)
    return _INFERENCE_TRACES[key]


def plan_inference(policy_cfg, batch: int, num_samples: int, decode_batch: int = 0,
                   model: ModelDescription | None = None, cuda: bool = True) -> InferencePlan:
    """The :class:`InferencePlan` of generating ``num_samples`` latents ``batch`` at a time (``decode_batch``
    images decoded together, 0: none), with the weights in :func:`srpo.models.families.frozen_dtype`
    (what :func:`srpo.models.families.inference_config` loads)."""
    from srpo.models.families import frozen_dtype

    model = model or describe_model(policy_cfg.pretrained, policy_cfg.family)
    dtype = frozen_dtype(policy_cfg)
    per = batch * (2 if _true_cfg(model.family) else 1)  # true CFG runs the negative prompt in the same batch
    t_params, vae_params, forward_peak, decode_peak = _inference_trace(model, per, policy_cfg.height,
                                                                       policy_cfg.width, dtype)
    nbytes = torch.empty(0, dtype=dtype).element_size()
    h, w = policy_cfg.height, policy_cfg.width
    c = model.vae.get("latent_channels", 16)
    scale = 2 ** (len(model.vae.get("block_out_channels", [0] * 4)) - 1)
    latent_bytes = num_samples * 2 * c * (h // scale) * (w // scale) * 4  # eps and x0 per sample, fp32
    return InferencePlan(
        family=model.family, resolution=(h, w), batch=per, dtype=str(dtype).removeprefix("torch."),
        transformer_weights=t_params * nbytes, text_encoders=text_encoder_params(model) * nbytes,
        vae=vae_params * nbytes, activations=float(max(forward_peak, decode_peak * decode_batch if decode_batch else 0)),
        images=decode_batch * 3 * h * w * 4.0, latents=float(latent_bytes), cuda=cuda)


def _true_cfg(family: str) -> bool:
    return adapter_class(family).guidance_kind == "cfg"
