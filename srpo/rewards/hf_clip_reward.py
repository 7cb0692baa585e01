"""Rewards built on transformers ``CLIPModel``: PickScore and plain CLIP.

PickScore is a CLIP-H fine-tune (``yuvalkirstain/PickScore_v1``) used with the laion
``CLIP-ViT-H-14-laion2B-s32B-b79K`` processor, whose tokenizer is OpenAI CLIP's BPE (the offline
:func:`srpo.models.tokenizers.clip_tokenizer` gives the same ids) and whose pixel statistics are
OpenAI CLIP's. Its score is ``logit_scale.exp() * cos``; the SRPO authors divide it by 20 to bring
it near HPS's scale, so the default ``scale`` here is ``logit_scale.exp() / 20``. "hf_clip" is any
``CLIPModel`` scored by the plain cosine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from srpo.io import build_once, cache_dir, resolve_model_location
from srpo.models.tokenizers import clip_tokenizer
from srpo.published import resolve_builtin
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, RewardModel
from srpo.rewards.config import DEFAULT_CHECKPOINTS, RewardConfig

#: Files whose presence marks a folder as holding a tokenizer.
#: CLIP's text positions (transformers' ``CLIPTextConfig`` default), when no config.json can be read.
CLIP_TEXT_POSITIONS = 77
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
PREPROCESSOR_FILE = "preprocessor_config.json"
#: The SRPO authors' divisor for PickScore.
PICKSCORE_DIVISOR = 20.0


class HFClipReward(RewardModel):
    """A transformers ``CLIPModel`` behind the reward protocol (cosine score times ``scale``)."""

    def __init__(self, model, tokenizer, *, scale: float = 1.0,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        super().__init__(model, image_size=model.config.vision_config.image_size,
                         scale=scale, mean=mean, std=std)
        self.tokenizer = tokenizer
        self.max_length = model.config.text_config.max_position_embeddings

    @property
    def logit_scale(self) -> float:
        """``logit_scale.exp()`` of the checkpoint (CLIP's learned temperature)."""
        return float(self.backbone.logit_scale.exp())

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return projected_embeddings(self.backbone.get_image_features(pixel_values=pixels))  # [B, D]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(list(prompts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return projected_embeddings(self.backbone.get_text_features(
            input_ids=batch["input_ids"].to(self.device),            # [B, L]
            attention_mask=batch["attention_mask"].to(self.device)))  # -> [B, D]


def projected_embeddings(output) -> torch.Tensor:
    """Projected embeddings from ``get_*_features``: a tensor (transformers 4) or an output object (5)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot find projected embeddings in {type(output).__name__} returned by CLIPModel")


def load_hf_clip_reward(config: RewardConfig) -> HFClipReward:
    """The transformers reward that ``config`` describes ("pickscore" or "hf_clip")."""
    if config.is_builtin:  # builtin:tiny or a published shapes-world model
        source: Path | str = resolve_builtin("reward", config.checkpoint, family=config.name, seed=config.seed)
    else:
        location = config.checkpoint if config.checkpoint is not None else DEFAULT_CHECKPOINTS.get(config.name)
        if location is None:
            raise ValueError(f"reward {config.name!r} needs a checkpoint: give a folder written by "
                             "CLIPModel.save_pretrained (local or fsspec URL), a hub id, or 'builtin:tiny'")
        source = resolve_model_location(location)
    model = load_clip_model(source)
    max_length = model.config.text_config.max_position_embeddings
    if config.processor_path is not None:
        processor = resolve_model_location(config.processor_path)
        tokenizer = load_tokenizer(processor, model_max_length=max_length, required=True)
    else:
        processor = source
        tokenizer = load_tokenizer(source, model_max_length=max_length, required=False)
    mean, std = pixel_statistics(processor)
    return HFClipReward(model, tokenizer, scale=default_scale(config, model), mean=mean, std=std)


def text_context(config: RewardConfig):
    """The reward's tokenizer and text length, read without its weights: ``config.json`` and the
    tokenizer files of a local (or built-in) folder; else the offline CLIP tokenizer and CLIP's 77
    positions (``CLIPTextConfig``'s default: hub ids are not fetched to validate a config)."""
    from srpo.rewards.text_context import TextContext

    source = None
    if config.is_builtin:
        try:
            source = resolve_builtin("reward", config.checkpoint, family=config.name, seed=config.seed)
        except FileNotFoundError:  # a world model not published yet: CLIP's tokenizer and length
            source = None
    elif config.checkpoint is not None and Path(config.checkpoint).is_dir():
        source = Path(config.checkpoint)
    max_length = CLIP_TEXT_POSITIONS
    if source is not None and (source / "config.json").is_file():
        text_config = json.loads((source / "config.json").read_text()).get("text_config") or {}
        max_length = int(text_config.get("max_position_embeddings", CLIP_TEXT_POSITIONS))
    processor = config.processor_path if config.processor_path is not None else source
    local = processor is not None and Path(processor).is_dir()
    tokenizer = (load_tokenizer(Path(processor), model_max_length=max_length, required=config.processor_path is not None)
                 if local else clip_tokenizer(model_max_length=max_length))
    where = f"the tokenizer in {processor}" if local else "the offline CLIP tokenizer"
    return TextContext(lambda text: len(tokenizer(text, truncation=False)["input_ids"]), max_length, where)


def default_scale(config: RewardConfig, model) -> float:
    """``config.scale`` if given; else ``logit_scale.exp() / 20`` for PickScore and 1.0 otherwise."""
    if config.scale is not None:
        return config.scale
    if config.name == "pickscore":
        return float(model.logit_scale.detach().exp()) / PICKSCORE_DIVISOR
    return 1.0


# -- where things come from ------------------------------------------------------------------

def load_clip_model(source: Path | str):
    """``CLIPModel.from_pretrained(source)`` with an error that says what to give instead."""
    from transformers import CLIPModel

    try:
        return CLIPModel.from_pretrained(str(source))
    except OSError as err:
        where = "local folder" if isinstance(source, Path) else "hub id (needs network access)"
        raise OSError(f"could not load a transformers CLIPModel from {where} {str(source)!r}: {err}\n"
                      "Give a folder (local or fsspec URL) written by CLIPModel.save_pretrained, holding "
                      "config.json and model.safetensors.") from err


def load_tokenizer(source: Path | str, *, model_max_length: int, required: bool):
    """The tokenizer saved in ``source`` (a folder or hub id), else the offline CLIP tokenizer.

    With ``required`` (an explicit ``processor_path``) a missing tokenizer is an error; otherwise
    a folder without tokenizer files, or a hub id whose tokenizer cannot be loaded, falls back to
    :func:`clip_tokenizer` (PickScore's laion CLIP-H tokenizer has the same ids).
    """
    if isinstance(source, Path) and not any((source / name).is_file() for name in TOKENIZER_FILES):
        if required:
            raise FileNotFoundError(f"processor_path {str(source)!r} holds no tokenizer ({', '.join(TOKENIZER_FILES)}): "
                                    "give a folder written by tokenizer.save_pretrained, or leave processor_path out")
        return clip_tokenizer(model_max_length=model_max_length)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except OSError as err:
        if not required:
            return clip_tokenizer(model_max_length=model_max_length)
        raise OSError(f"could not load a tokenizer from {str(source)!r}: {err}\nGive processor_path as a "
                      "folder holding tokenizer files, or leave it out to use the offline CLIP tokenizer.") from err


def pixel_statistics(source: Path | str) -> tuple[list[float], list[float]]:
    """``image_mean``/``image_std`` from ``source``'s preprocessor config, else OpenAI CLIP's."""
    path = Path(source) / PREPROCESSOR_FILE if isinstance(source, Path) else None
    if path is None or not path.is_file():
        return list(CLIP_MEAN), list(CLIP_STD)
    cfg = json.loads(path.read_text())
    return list(cfg.get("image_mean", CLIP_MEAN)), list(cfg.get("image_std", CLIP_STD))


# -- builtin:tiny ----------------------------------------------------------------------------

def tiny_clip_config():
    """A tiny ``CLIPConfig`` with CLIP's vocabulary and context length."""
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=2)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def build_tiny_hf_clip(name: str, seed: int) -> Path:
    """Folder ``cache_dir()/builtin/<name>-tiny-<seed>/``: a seeded random tiny CLIP with tokenizer (made once)."""
    from transformers import CLIPImageProcessor, CLIPModel

    def build(folder: Path) -> None:
        config = tiny_clip_config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        model.save_pretrained(folder)
        clip_tokenizer(model_max_length=config.text_config.max_position_embeddings).save_pretrained(folder)
        size = config.vision_config.image_size
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                           image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(folder)

    return build_once(cache_dir() / "builtin" / f"{name}-tiny-{seed}", build)
