"""Rewards built on open_clip: HPS v2.1 and plain CLIP.

HPS v2.1 is open_clip's ViT-H-14 with the HPS v2.1 state dict (``HPS_v2.1_compressed.pt``, a
dict with key ``"state_dict"`` whose keys equal open_clip 3.3's); its score is the plain cosine
between image and text features, with no logit scale. "clip" is any open_clip architecture with
any state dict, scored the same way.

Preprocessing differs from HPS's own transform on purpose: HPS resizes the *long* side to 224
and pads to a square (PIL, not differentiable); here the image is preprocessed inside the graph
as the design says (bicubic resize of the *shorter* side, centre crop, CLIP normalisation; see
:func:`srpo.rewards.base.preprocess_for_clip`), which is what the SRPO authors' training code
does too. For square generations the two agree up to interpolation details.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from srpo.io import atomic_write_text, build_once, cache_dir, resolve_local
from srpo.published import resolve_builtin
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, RewardModel
from srpo.rewards.config import RewardConfig

#: A tiny architecture of the ViT-H-14 family, for tests and the CPU default (``builtin:tiny``).
TINY_ARCHITECTURE = "srpo-tiny-ViT"
TINY_CONFIG: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: File names that open_clip uses inside a model folder (hub layout), tried in this order.
FOLDER_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_KEYS_SHOWN = 5


class OpenClipReward(RewardModel):
    """An open_clip ``CLIP`` model behind the reward protocol (cosine score times ``scale``)."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, architecture: str, scale: float = 1.0) -> None:
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(model)
        use_sequence_first_attention(model)
        super().__init__(model, image_size=image_side(model), scale=scale, mean=cfg.get("mean", CLIP_MEAN),
                         std=cfg.get("std", CLIP_STD))
        self.tokenizer = tokenizer
        self.architecture = architecture

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(pixels)  # [B, 3, S, S] -> [B, D]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts).to(self.device)  # [B, context_length]
        return self.backbone.encode_text(tokens)  # [B, D]

    @classmethod
    def from_checkpoint(cls, architecture: str, checkpoint: Path, *, scale: float = 1.0) -> "OpenClipReward":
        """Build ``architecture`` and load the state-dict file ``checkpoint`` into it (strictly)."""
        import open_clip

        model = create_open_clip_model(architecture)
        state_dict = read_state_dict(checkpoint)
        check_state_dict_fits(model, state_dict, architecture, checkpoint)
        model.load_state_dict(state_dict, strict=True)
        return cls(model, open_clip.get_tokenizer(architecture), architecture=architecture, scale=scale)


def use_sequence_first_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Run ``model``'s open_clip transformers sequence-first ([L, B, D]) instead of batch-first.

    The outputs are the same. Batch-first, ``nn.MultiheadAttention`` transposes its input and
    projects a non-contiguous [L, B, D] view; when that view requires grad (a reward inside the
    training graph) torch does not fold it into one matrix product but runs a batched product
    with the weight broadcast, which on the CPU (torch 2.14) made ViT-H-14's differentiable
    forward 4x slower at batch 2 than at batch 1 (``python -m benchmarks.reward_backward``).
    Sequence-first, the projections read LayerNorm's contiguous output. Plain ``Transformer``
    stacks only (their blocks hold ``nn.MultiheadAttention``); other open_clip variants are
    left as they are. Returns ``model``, changed in place.
    """
    from open_clip.transformer import Transformer

    for module in model.modules():
        if type(module) is Transformer and all(isinstance(getattr(block, "attn", None), torch.nn.MultiheadAttention)
                                               for block in module.resblocks):
            module.batch_first = False
            for block in module.resblocks:
                block.attn.batch_first = False
    return model


def load_open_clip_reward(config: RewardConfig) -> OpenClipReward:
    """The open_clip reward that ``config`` describes ("hpsv2.1" or "clip")."""
    scale = 1.0 if config.scale is None else config.scale
    if config.is_builtin:  # builtin:tiny (the config refuses world models for open_clip rewards)
        folder = resolve_builtin("reward", config.checkpoint, family=config.name, seed=config.seed)
        return OpenClipReward.from_checkpoint(TINY_ARCHITECTURE, folder / FOLDER_WEIGHT_NAMES[0], scale=scale)
    if config.checkpoint is None:
        hint = " (HPS_v2.1_compressed.pt)" if config.name == "hpsv2.1" else ""
        raise ValueError(f"reward {config.name!r} needs a checkpoint: give the path or fsspec URL of its "
                         f"state dict{hint}, or 'builtin:tiny' for a tiny random model")
    return OpenClipReward.from_checkpoint(config.architecture, resolve_checkpoint(config.checkpoint), scale=scale)


def text_context(config: RewardConfig):
    """The reward's tokenizer and text length, read without its weights (open_clip ships CLIP's BPE)."""
    import open_clip

    from srpo.rewards.text_context import TextContext

    architecture = TINY_ARCHITECTURE if config.is_builtin else config.architecture
    if config.is_builtin:
        register_tiny_config()
    tokenizer = open_clip.get_tokenizer(architecture)
    return TextContext(lambda text: len(tokenizer.encode(text)) + 2,  # + start and end tokens
                       int(tokenizer.context_length), f"open_clip {architecture}'s tokenizer")


# -- architecture ----------------------------------------------------------------------------

def register_tiny_config() -> None:
    """Make ``TINY_ARCHITECTURE`` known to open_clip's config registry (idempotent)."""
    import open_clip

    if TINY_ARCHITECTURE in open_clip.list_models():
        return
    path = cache_dir() / "builtin" / "open_clip_configs" / f"{TINY_ARCHITECTURE}.json"
    atomic_write_text(path, json.dumps(TINY_CONFIG, indent=2))
    open_clip.add_model_config(path)


def image_side(model: torch.nn.Module) -> int:
    """The side of the square images an open_clip model reads (its preprocess config; 224 if it names none)."""
    import open_clip

    size = open_clip.get_model_preprocess_cfg(model).get("size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def create_open_clip_model(architecture: str, device: str = "cpu") -> torch.nn.Module:
    """A randomly initialised open_clip model (no download), in eval mode on ``device`` (``meta``: no memory)."""
    import open_clip

    if architecture == TINY_ARCHITECTURE:
        register_tiny_config()
    if architecture not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {architecture!r}: give a name from "
                         f"open_clip.list_models() (e.g. 'ViT-H-14' for HPS v2.1) or {TINY_ARCHITECTURE!r}")
    with _without_random_init_warning():  # weights are loaded right after, by us
        return open_clip.create_model(architecture, pretrained=None, device=device).eval()


@contextlib.contextmanager
def _without_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" root-logger warning."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


# -- weights ---------------------------------------------------------------------------------

def resolve_checkpoint(location: str) -> Path:
    """Local path of the state-dict file at ``location`` (path, ``file://`` or fsspec URL).

    A folder is accepted when it holds one of open_clip's own weight files
    (``open_clip_model.safetensors``, ``open_clip_pytorch_model.bin``).
    """
    try:
        path = resolve_local(location)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"open_clip checkpoint {location!r} does not exist: give the local path or fsspec URL "
            f"(s3://bucket/key) of a {'/'.join(STATE_DICT_SUFFIXES)} state dict, or 'builtin:tiny'") from err
    if path.is_dir():
        for name in FOLDER_WEIGHT_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"open_clip checkpoint folder {location!r} holds none of "
                                f"{', '.join(FOLDER_WEIGHT_NAMES)}: give the state-dict file itself")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save`` file, bare or under ``"state_dict"``.

    ``torch.save`` files are read with ``weights_only=True``: a file that pickles arbitrary
    Python objects is refused rather than executed.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path} holds pickled Python objects besides tensors, so it is not loaded "
                             "(weights_only=True): re-save only the weights, e.g. "
                             "torch.save({'state_dict': model.state_dict()}, path) or as .safetensors") from err
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors, bare or under "
                         "'state_dict')")
    state_dict = dict(obj)
    if state_dict and all(k.startswith("module.") for k in state_dict):  # saved from DDP
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def check_state_dict_fits(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                          architecture: str, source: Path | str) -> None:
    """Raise a ``ValueError`` naming the mismatched keys if ``state_dict`` does not fit ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if not (missing or unexpected or wrong_shape):
        return
    problems = [f"{label}: {', '.join(keys[:_KEYS_SHOWN])}"
                + (f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else "")
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches, checkpoint vs model", wrong_shape)) if keys]
    raise ValueError(f"the state dict in {source} does not fit open_clip architecture {architecture!r}; "
                     + "; ".join(problems)
                     + ". Set `architecture` to the one the checkpoint was trained with (HPS v2.1: 'ViT-H-14')")


# -- builtin:tiny ----------------------------------------------------------------------------

def build_tiny_open_clip(name: str, seed: int) -> Path:
    """Folder ``cache_dir()/builtin/<name>-tiny-<seed>/`` with a seeded random tiny model (made once)."""
    from safetensors.torch import save_file

    def build(folder: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_open_clip_model(TINY_ARCHITECTURE)
        state_dict = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state_dict, str(folder / FOLDER_WEIGHT_NAMES[0]))
        config = {"model_cfg": TINY_CONFIG, "architecture": TINY_ARCHITECTURE, "seed": seed}
        (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))

    return build_once(cache_dir() / "builtin" / f"{name}-tiny-{seed}", build)
