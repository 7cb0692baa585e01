"""ImageReward (BLIP ViT-L + BERT with cross-attention + MLP) on transformers' BLIP modules.

The ``image-reward`` package fails on current transformers, so its checkpoint
(``ImageReward.pt``: a state dict) is loaded into transformers' ``BlipVisionModel`` and
``BlipTextModel`` through an explicit key map. The score, as ImageReward computes it:

1. image -> bicubic resize of the shorter side to 224, centre crop, CLIP mean/std;
   ``v = visual_encoder(image)`` (all tokens, ``[B, 1 + N, 1024]``, after the final LayerNorm);
2. prompt -> BERT ``bert-base-uncased`` ids (``[CLS] ... [SEP]``, padded to 35, truncated);
   ``h = text_encoder(ids, attention_mask, encoder_hidden_states=v)`` (bidirectional
   self-attention, cross-attention to every image token in each layer);
3. ``r = MLP(h[:, 0])`` with the MLP ``768 -> 1024 -> 128 -> 64 -> 16 -> 1`` (no activations);
4. ``reward = (r - 0.16717362830052426) / 1.0333394966054072``.

Key map (ImageReward name -> module here); ``blip.vision_proj``, ``blip.text_proj`` and
``position_ids`` buffers are not used by the score and are dropped::

    blip.visual_encoder.cls_token            -> vision.embeddings.class_embedding
    blip.visual_encoder.pos_embed            -> vision.embeddings.position_embedding
    blip.visual_encoder.patch_embed.proj.*   -> vision.embeddings.patch_embedding.*
    blip.visual_encoder.blocks.{i}.norm1.*   -> vision.encoder.layers.{i}.layer_norm1.*
    blip.visual_encoder.blocks.{i}.attn.qkv.*  -> vision.encoder.layers.{i}.self_attn.qkv.*
    blip.visual_encoder.blocks.{i}.attn.proj.* -> vision.encoder.layers.{i}.self_attn.projection.*
    blip.visual_encoder.blocks.{i}.norm2.*   -> vision.encoder.layers.{i}.layer_norm2.*
    blip.visual_encoder.blocks.{i}.mlp.fc{1,2}.* -> vision.encoder.layers.{i}.mlp.fc{1,2}.*
    blip.visual_encoder.norm.*               -> vision.post_layernorm.*
    blip.text_encoder.<rest>                 -> text.<rest>   (same names as BLIP's med.py)
    mlp.layers.{0,2,4,6,7}.*                 -> mlp.layers.{0,2,4,6,7}.*

Sizes are read from the checkpoint's shapes; head counts default to ``width / 64`` (ViT-L: 16,
BERT-base: 12) and can be set for other sizes (``vision_heads``, ``text_heads``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import torch

from srpo.evaluation.metrics.base import ModuleMetric
from srpo.io import build_once, cache_dir, resolve_local, resolve_model_location
from srpo.published import is_builtin, resolve_builtin
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, preprocess_for_clip

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TEXT_LENGTH = 35
DEFAULT_TOKENIZER = "bert-base-uncased"
CHECKPOINT_FILE = "ImageReward.pt"
MLP_WIDTHS = (1024, 128, 64, 16, 1)
VISION_LN_EPS = 1e-6  # BLIP's ViT: LayerNorm(eps=1e-6)
TEXT_LN_EPS = 1e-12   # BERT

_VISION_RULES = [
    (r"^blip\.visual_encoder\.cls_token$", "vision.embeddings.class_embedding"),
    (r"^blip\.visual_encoder\.pos_embed$", "vision.embeddings.position_embedding"),
    (r"^blip\.visual_encoder\.patch_embed\.proj\.(weight|bias)$", r"vision.embeddings.patch_embedding.\1"),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm1\.(weight|bias)$", r"vision.encoder.layers.\1.layer_norm1.\2"),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"vision.encoder.layers.\1.self_attn.qkv.\2"),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$",
     r"vision.encoder.layers.\1.self_attn.projection.\2"),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm2\.(weight|bias)$", r"vision.encoder.layers.\1.layer_norm2.\2"),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"vision.encoder.layers.\1.mlp.\2.\3"),
    (r"^blip\.visual_encoder\.norm\.(weight|bias)$", r"vision.post_layernorm.\1"),
    (r"^blip\.text_encoder\.(.+)$", r"text.\1"),
    (r"^mlp\.layers\.(\d+)\.(weight|bias)$", r"mlp.layers.\1.\2"),
]
#: Checkpoint keys that the score does not use.
_DROPPED = re.compile(r"^blip\.(vision_proj|text_proj)\.|position_ids$|^blip\.visual_encoder\.head\.")


def map_imagereward_key(key: str) -> str | None:
    """The module key for an ImageReward checkpoint key; ``None`` for keys the score drops.

    Raises ``KeyError`` for a key that is neither mapped nor known to be unused.
    """
    if _DROPPED.search(key):
        return None
    for pattern, target in _VISION_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    raise KeyError(key)


def convert_imagereward_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ImageReward checkpoint -> state dict of :class:`ImageRewardModel` (see the key map above)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    out, unknown = {}, []
    for key, value in state.items():
        try:
            target = map_imagereward_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if target is not None:
            out[target] = value
    if unknown:
        raise ValueError(f"checkpoint keys that are not part of ImageReward: {unknown[:6]}"
                         + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
                         + ". Give the ImageReward.pt state dict (keys blip.visual_encoder.*, blip.text_encoder.*, mlp.*)")
    return out


class ImageRewardMLP(torch.nn.Module):
    """``768 -> 1024 -> 128 -> 64 -> 16 -> 1``, dropout between the first four, no activations."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        d = torch.nn.Dropout
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(in_features, 1024), d(0.2), torch.nn.Linear(1024, 128), d(0.2),
            torch.nn.Linear(128, 64), d(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ImageRewardModel(torch.nn.Module):
    """BLIP vision tower + BERT text encoder with cross-attention + MLP: ``(pixels, ids, mask) -> [B]``."""

    def __init__(self, vision_config, text_config) -> None:
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.mlp = ImageRewardMLP(text_config.hidden_size)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state  # [B, 1+N, Dv]
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                           encoder_attention_mask=image_mask, is_decoder=False).last_hidden_state  # [B, L, Dt]
        raw = self.mlp(hidden[:, 0].float()).squeeze(-1)  # [B]
        return (raw - REWARD_MEAN) / REWARD_STD


def configs_from_state_dict(state: Mapping[str, torch.Tensor], vision_heads: int | None = None,
                            text_heads: int | None = None):
    """``(BlipVisionConfig, BlipTextConfig)`` whose shapes fit an ImageReward checkpoint."""
    from transformers import BlipTextConfig, BlipVisionConfig

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"the checkpoint lacks {key!r}: it is not an ImageReward state dict")
        return state[key]

    pos = need("blip.visual_encoder.pos_embed")  # [1, 1+N, Dv]
    patch = need("blip.visual_encoder.patch_embed.proj.weight")  # [Dv, 3, p, p]
    width_v, p = pos.shape[-1], patch.shape[-1]
    side = round((pos.shape[1] - 1) ** 0.5)
    depth_v = len({int(m.group(1)) for k in state if (m := re.match(r"blip\.visual_encoder\.blocks\.(\d+)\.", k))})
    vision = BlipVisionConfig(
        hidden_size=width_v, intermediate_size=need("blip.visual_encoder.blocks.0.mlp.fc1.weight").shape[0],
        num_hidden_layers=depth_v, num_attention_heads=vision_heads or max(1, width_v // 64),
        image_size=side * p, patch_size=p, layer_norm_eps=VISION_LN_EPS, hidden_act="gelu")
    words = need("blip.text_encoder.embeddings.word_embeddings.weight")  # [V, Dt]
    depth_t = len({int(m.group(1)) for k in state if (m := re.match(r"blip\.text_encoder\.encoder\.layer\.(\d+)\.", k))})
    vocab, width_t = words.shape
    text = BlipTextConfig(
        vocab_size=vocab, hidden_size=width_t,
        encoder_hidden_size=need("blip.text_encoder.encoder.layer.0.crossattention.self.key.weight").shape[1],
        intermediate_size=need("blip.text_encoder.encoder.layer.0.intermediate.dense.weight").shape[0],
        num_hidden_layers=depth_t, num_attention_heads=text_heads or max(1, width_t // 64),
        max_position_embeddings=need("blip.text_encoder.embeddings.position_embeddings.weight").shape[0],
        layer_norm_eps=TEXT_LN_EPS, hidden_act="gelu", is_decoder=True,  # is_decoder builds the cross-attention
        pad_token_id=0, bos_token_id=min(30522, vocab - 1), sep_token_id=min(102, vocab - 1))
    for heads, width, what in ((vision.num_attention_heads, width_v, "vision_heads"),
                               (text.num_attention_heads, width_t, "text_heads")):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads: set `{what}`")
    return vision, text


def load_imagereward_model(state: Mapping[str, torch.Tensor], vision_heads: int | None = None,
                           text_heads: int | None = None) -> ImageRewardModel:
    """An :class:`ImageRewardModel` holding ``state`` (an ImageReward checkpoint), checked key by key."""
    vision_cfg, text_cfg = configs_from_state_dict(state, vision_heads, text_heads)
    model = ImageRewardModel(vision_cfg, text_cfg)
    converted = convert_imagereward_state_dict(state)
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected) - {k for k in converted if k.endswith("position_ids")})
    shapes = [f"{k} {tuple(converted[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in converted and converted[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"the checkpoint does not fit ImageReward's architecture: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    model.load_state_dict({k: converted[k] for k in expected}, strict=False)
    return model.eval().requires_grad_(False)


def blip_tokenizer(location: str):
    """BLIP's tokenizer: BERT (``bert-base-uncased``) plus ``[DEC]`` (bos) and ``[ENC]``."""
    from transformers import AutoTokenizer

    source = resolve_model_location(location)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise OSError(f"could not load ImageReward's BERT tokenizer from {location!r}: {err}\nGive `processor` as a "
                      f"folder with the {DEFAULT_TOKENIZER} tokenizer files (vocab.txt) or its hub id") from err
    if "[DEC]" not in tok.get_vocab():
        tok.add_special_tokens({"bos_token": "[DEC]"})
    if "[ENC]" not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


class ImageRewardMetric(ModuleMetric):
    """ImageReward behind the metric interface."""

    name = "imagereward"

    def __init__(self, model: ImageRewardModel, tokenizer, batch_size: int = 16) -> None:
        super().__init__(batch_size)
        self.model, self.tokenizer = model, tokenizer
        self.image_size = model.vision.config.image_size
        vocab = model.text.config.vocab_size
        if len(tokenizer) > vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's text encoder only {vocab}: "
                             f"give the tokenizer ImageReward was trained with ({DEFAULT_TOKENIZER})")

    def encode_text(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TEXT_LENGTH,
                               return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)  # [B, 35] each

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        pixels = preprocess_for_clip(images.to(device=self.device, dtype=dtype), self.image_size, CLIP_MEAN, CLIP_STD)
        ids, mask = self.encode_text(prompts)
        return self.model(pixels, ids, mask).float()  # [B]


def load_imagereward_metric(cfg) -> ImageRewardMetric:
    """ImageReward from ``cfg.checkpoint`` (ImageReward.pt) and ``cfg.processor`` (BERT tokenizer)."""
    from srpo.rewards.open_clip_reward import read_state_dict

    if is_builtin(cfg.checkpoint):
        folder = resolve_builtin("metric", cfg.checkpoint, family=cfg.name, seed=cfg.seed)
        path, tokenizer = folder / CHECKPOINT_FILE, str(folder / "tokenizer")
        vision_heads, text_heads = TINY_HEADS, TINY_HEADS
    else:
        if cfg.checkpoint is None:
            raise ValueError("metric 'imagereward' needs its checkpoint: give `checkpoint` as the path or s3:// URL of "
                             f"{CHECKPOINT_FILE} (hub: THUDM/ImageReward), or 'builtin:tiny' for a tiny random model")
        path, tokenizer = resolve_local(cfg.checkpoint), cfg.processor or DEFAULT_TOKENIZER
        vision_heads, text_heads = cfg.vision_heads, cfg.text_heads
    model = load_imagereward_model(read_state_dict(Path(path)), cfg.vision_heads or vision_heads,
                                   cfg.text_heads or text_heads)
    return ImageRewardMetric(model, blip_tokenizer(tokenizer), batch_size=cfg.batch_size)


# -- builtin:tiny ----------------------------------------------------------------------------

TINY_HEADS = 2
TINY_WORDS = ("a an the of and with in on photo painting anime art concept red green blue cat dog "
              "bird house tree city night sky sun portrait landscape style realistic detailed").split()


def tiny_bert_tokenizer():
    """A BERT WordPiece tokenizer over a small word list, with BLIP's two extra tokens."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True,
                        model_max_length=512)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def tiny_imagereward_configs(vocab_size: int):
    from transformers import BlipTextConfig, BlipVisionConfig

    vision = BlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=TINY_HEADS,
                              image_size=32, patch_size=8, layer_norm_eps=VISION_LN_EPS, hidden_act="gelu")
    text = BlipTextConfig(vocab_size=vocab_size, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=TINY_HEADS, max_position_embeddings=40,
                          layer_norm_eps=TEXT_LN_EPS, hidden_act="gelu", is_decoder=True, pad_token_id=0,
                          bos_token_id=vocab_size - 2, sep_token_id=3)
    return vision, text


def to_imagereward_state_dict(model: ImageRewardModel) -> dict[str, torch.Tensor]:
    """The inverse key map: our module's weights under ImageReward's checkpoint names."""
    inverse = {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        name = key
        for ours, theirs in ((r"^vision\.embeddings\.class_embedding$", "blip.visual_encoder.cls_token"),
                             (r"^vision\.embeddings\.position_embedding$", "blip.visual_encoder.pos_embed"),
                             (r"^vision\.embeddings\.patch_embedding\.", "blip.visual_encoder.patch_embed.proj."),
                             (r"^vision\.encoder\.layers\.(\d+)\.layer_norm1\.", r"blip.visual_encoder.blocks.\1.norm1."),
                             (r"^vision\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blip.visual_encoder.blocks.\1.attn.qkv."),
                             (r"^vision\.encoder\.layers\.(\d+)\.self_attn\.projection\.",
                              r"blip.visual_encoder.blocks.\1.attn.proj."),
                             (r"^vision\.encoder\.layers\.(\d+)\.layer_norm2\.", r"blip.visual_encoder.blocks.\1.norm2."),
                             (r"^vision\.encoder\.layers\.(\d+)\.mlp\.", r"blip.visual_encoder.blocks.\1.mlp."),
                             (r"^vision\.post_layernorm\.", "blip.visual_encoder.norm."),
                             (r"^text\.", "blip.text_encoder."), (r"^mlp\.", "mlp.")):
            if re.match(ours, key):
                name = re.sub(ours, theirs, key)
                break
        inverse[name] = value.contiguous()
    return inverse


def build_tiny_imagereward(seed: int = 0) -> Path:
    """``cache_dir()/builtin/imagereward-tiny-<seed>/``: ImageReward.pt (original key layout) + tokenizer."""

    def build(folder: Path) -> None:
        tok = tiny_bert_tokenizer()
        vision_cfg, text_cfg = tiny_imagereward_configs(len(tok))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ImageRewardModel(vision_cfg, text_cfg)
        torch.save({"state_dict": to_imagereward_state_dict(model)}, folder / CHECKPOINT_FILE)
        tok.save_pretrained(folder / "tokenizer")

    return build_once(cache_dir() / "builtin" / f"imagereward-tiny-{seed}", build)
