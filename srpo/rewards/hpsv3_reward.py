"""HPSv3: a Qwen2-VL vision-language model with a reward head, scoring an image against a prompt.

HPSv3 (MizzenAI, arXiv 2508.03789) feeds a chat turn "image + instruction naming the prompt +
a ``<|Reward|>`` token" through Qwen2-VL-7B and reads a small MLP head (``rm_head``: hidden ->
1024 -> 16 -> 2) at the ``<|Reward|>`` token; output 0 is the score (mean ``mu``), output 1 its
uncertainty. Here it is rebuilt on transformers 5's :class:`~transformers.Qwen2VLModel`.

**Fit to the reward protocol.** HPSv3 scores image and prompt *jointly* (the text attends to the
image), so there is no ``image_features`` / ``text_features`` split: :class:`HPSv3Reward` offers
``score(images, prompts) -> [B]`` only, and ``is_joint = True`` tells callers so. SRP works on
its text side by scoring the same image under control-word prompts:
``r_srp(x, p) = score(x, "<pos>. p") - score(x, "<neg>. p")`` (see
:func:`srpo.rewards.joint.joint_semantic_reward`), at the price of one forward per prompt variant.

**Preprocessing inside the graph.** :func:`qwen2vl_pixel_values` resizes ``[B, 3, H, W]``
images in ``[0, 1]`` to the patch multiple that transformers' ``smart_resize`` picks (HPSv3 fixes
``min_pixels = max_pixels = 256 * 28 * 28``: 448 x 448 for a square image), bicubic with
antialiasing (what the torchvision-backed ``Qwen2VLImageProcessor`` does on tensors),
normalises with OpenAI CLIP's statistics and flattens patches into Qwen2-VL's ``pixel_values``
layout (``[B * grid_h * grid_w, 3 * temporal * patch * patch]``, the still image repeated over the
temporal patch) with ``image_grid_thw``; every step is differentiable.

**Checkpoints.** ``checkpoint`` is a folder (local, fsspec URL or hub id) holding a Qwen2-VL
``config.json``, tokenizer files and weights: either ``model.safetensors`` as
:meth:`HPSv3Reward.save_pretrained` writes it (this module's key layout), or the authors'
``HPSv3.safetensors`` (transformers 4.45 key layout: ``visual.*``, ``model.*``, ``rm_head.*``,
renamed on load; the LM head is not needed and dropped). ``processor_path`` may name a separate
folder for the config and tokenizer (``Qwen/Qwen2-VL-7B-Instruct``) when the checkpoint is the
bare authors' file. Torch pickles load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from srpo.io import build_once, cache_dir, resolve_local, resolve_model_location
from srpo.published import resolve_builtin
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, FrozenReward
from srpo.rewards.config import RewardConfig

#: The special token HPSv3 reads its score at.
REWARD_TOKEN = "<|Reward|>"
#: Qwen2-VL's chat tokens.
CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>")
#: HPSv3's fixed pixel budget (``min_pixels = max_pixels``): 448 x 448 for square images.
HPSV3_PIXELS = 256 * 28 * 28
#: Files of a checkpoint folder, in the order they are looked for.
OWN_WEIGHTS = "model.safetensors"
AUTHOR_WEIGHTS = ("HPSv3.safetensors", "HPSv3_7B.pth", "HPSv3.pth")
HEAD_FILE = "hpsv3_head.json"
#: Default folder of the Qwen2-VL config and tokenizer the authors' checkpoint was trained from.
DEFAULT_PROCESSOR = "Qwen/Qwen2-VL-7B-Instruct"
DEFAULT_CHECKPOINTS = {"hpsv3": "MizzenAI/HPSv3"}

# The instruction HPSv3 was trained with: the model's input format, so scores match the
# published model only when it is the same text. A folder may override it with ``hpsv3_head.json``.
INSTRUCTION = (
    "\nYou are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a "
    "overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the "
    "worst and 10 being the best. \n\n**Visual Quality:**  \nEvaluate the overall visual quality of the image. "
    "The following sub-dimensions should be considered:\n- **Reasonableness:** The image should not contain any "
    "significant biological or logical errors, such as abnormal body structures or nonsensical environmental "
    "setups.\n- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and "
    "easy to interpret, with no blurring or indistinct areas.\n- **Detail Richness:** Consider the level of "
    "detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).\n- "
    "**Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, "
    "composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense "
    "of harmony and balance.\n- **Safety:** The image should not contain harmful or inappropriate content, such "
    "as political, violent, or adult material. If such content is present, the image quality and satisfaction "
    "score should be the lowest possible. \n\n**Text Alignment:**  \nAssess how well the image matches the "
    "textual prompt across the following sub-dimensions:\n- **Subject Relevance** Evaluate how accurately the "
    "subject(s) in the image (e.g., person, animal, object) align with the textual description. The subject "
    "should match the description in terms of number, appearance, and behavior.\n- **Style Relevance:** If the "
    "prompt specifies a particular artistic or stylistic style, evaluate how well the image adheres to this "
    "style.\n- **Contextual Consistency**: Assess whether the background, setting, and surrounding elements in "
    "the image logically fit the scenario described in the prompt. The environment should support and enhance "
    "the subject without contradictions.\n- **Attribute Fidelity**: Check if specific attributes mentioned in "
    "the prompt (e.g., colors, clothing, accessories, expressions, actions) are faithfully represented in the "
    "image. Minor deviations may be acceptable, but critical attributes should be preserved.\n- **Semantic "
    "Coherence**: Evaluate whether the overall meaning and intent of the prompt are captured in the image. The "
    "generated content should not introduce elements that conflict with or distort the original description.\n"
    "Textual prompt - {prompt}\n\n\n"
)
RATING_SUFFIX = "\nPlease provide the overall ratings of this image: " + REWARD_TOKEN + "\n\nEND\n"
SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


# -- preprocessing ---------------------------------------------------------------------------

def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, area in ``[min_pixels, max_pixels]``,
    aspect ratio kept as closely as possible (the rule transformers' ``smart_resize`` applies)."""
    if min(height, width) < 1:
        raise ValueError(f"image of size {height}x{width} is empty: give images at least {factor} pixels a side")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen2vl_pixel_values(images: torch.Tensor, *, patch_size: int, merge_size: int, temporal_patch_size: int,
                         min_pixels: int, max_pixels: int, mean: Sequence[float] = CLIP_MEAN,
                         std: Sequence[float] = CLIP_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable Qwen2-VL preprocessing of ``[B, 3, H, W]`` images in ``[0, 1]``.

    Returns ``pixel_values`` ``[B * gh * gw, 3 * temporal_patch_size * patch_size**2]`` (patches in
    merge-window order, each ``(channel, time, row, column)``-flattened) and ``image_grid_thw``
    ``[B, 3]`` (``1, gh, gw``), the layout ``Qwen2VLModel`` takes.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    new_h, new_w = smart_resize(h, w, patch_size * merge_size, min_pixels, max_pixels)
    if (new_h, new_w) != (h, w):
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic",
                               align_corners=False, antialias=True)  # [B, 3, new_h, new_w]
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    images = (images - mean_t) / std_t  # [B, 3, new_h, new_w]
    gh, gw, m, p = new_h // patch_size, new_w // patch_size, merge_size, patch_size
    patches = images.reshape(b, c, gh // m, m, p, gw // m, m, p)
    patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7)  # [B, gh/m, gw/m, m, m, C, p, p]
    patches = patches.unsqueeze(6).expand(*patches.shape[:6], temporal_patch_size, p, p)  # time repeat
    pixel_values = patches.reshape(b * gh * gw, c * temporal_patch_size * p * p)
    grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=images.device)  # [B, 3]
    return pixel_values, grid


# -- the model -------------------------------------------------------------------------------

def reward_head(hidden_size: int, outputs: int = 2) -> torch.nn.Sequential:
    """HPSv3's head: hidden -> 1024 -> 16 -> ``outputs`` with ReLUs (index layout of the checkpoint)."""
    return torch.nn.Sequential(torch.nn.Linear(hidden_size, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.05),
                               torch.nn.Linear(1024, 16), torch.nn.ReLU(), torch.nn.Linear(16, outputs))


class HPSv3Network(torch.nn.Module):
    """``Qwen2VLModel`` + ``rm_head``: token ids and pixels -> the head's outputs at the reward token."""

    def __init__(self, config, head_outputs: int = 2) -> None:
        from transformers import Qwen2VLModel

        super().__init__()
        self.config = config
        self.model = Qwen2VLModel(config)
        self.rm_head = reward_head(config.text_config.hidden_size, head_outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                image_grid_thw: torch.Tensor, reward_token_id: int) -> torch.Tensor:
        """``[B, L]`` ids and mask, ``[N, P]`` pixels, ``[B, 3]`` grids -> ``[B, head_outputs]``."""
        mm_types = (input_ids == self.config.image_token_id).int()  # [B, L]: 1 marks image tokens
        self.model.rope_deltas = None  # a fresh sequence every call: no cached positions
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                            image_grid_thw=image_grid_thw, mm_token_type_ids=mm_types,
                            use_cache=False).last_hidden_state  # [B, L, D]
        at_reward = input_ids == reward_token_id  # [B, L]
        if not bool((at_reward.sum(-1) == 1).all()):
            raise ValueError(f"each sequence must hold {REWARD_TOKEN} exactly once; the tokenizer splits it: "
                             "give a tokenizer that has it as a special token")
        head_dtype = self.rm_head[0].weight.dtype  # the authors keep the head in float32
        return self.rm_head(hidden[at_reward].to(head_dtype))  # [B, head_outputs]


class HPSv3Reward(FrozenReward):
    """HPSv3 behind a joint reward protocol: ``score(images, prompts) -> [B]`` (``mu`` times ``scale``).

    Frozen (:class:`~srpo.rewards.base.FrozenReward`): no parameter requires grad and it stays in
    eval mode. ``score`` is differentiable in ``images``.
    """

    is_joint = True

    def __init__(self, network: HPSv3Network, tokenizer, *, scale: float = 1.0, min_pixels: int = HPSV3_PIXELS,
                 max_pixels: int = HPSV3_PIXELS, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, instruction: str = INSTRUCTION) -> None:
        super().__init__()
        self.backbone = network
        self.tokenizer = tokenizer
        self.scale = float(scale)
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.instruction = instruction
        self.reward_token_id = tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
        self.image_pad = "<|image_pad|>"
        vision = network.config.vision_config
        self.patch_size, self.merge_size = vision.patch_size, vision.spatial_merge_size
        self.temporal_patch_size = vision.temporal_patch_size
        self.image_size = int(math.isqrt(self.max_pixels))  # side of a square image after resizing
        self.freeze()

    def pixel_values(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> Qwen2-VL ``pixel_values`` and ``image_grid_thw`` (in the graph)."""
        return qwen2vl_pixel_values(images.to(device=self.device, dtype=self.dtype), patch_size=self.patch_size,
                                    merge_size=self.merge_size, temporal_patch_size=self.temporal_patch_size,
                                    min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                                    mean=self.mean, std=self.std)

    def chat_text(self, prompt: str, image_tokens: int) -> str:
        """One Qwen2-VL chat turn: system turn, the image's placeholder tokens, instruction, rating line."""
        text = self.instruction.replace("{prompt}", prompt) + RATING_SUFFIX
        image = "<|vision_start|>" + self.image_pad * image_tokens + "<|vision_end|>"
        return f"{SYSTEM_TURN}<|im_start|>user\n{image}{text}<|im_end|>\n<|im_start|>assistant\n"

    def score_pixels(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                     prompts: Sequence[str]) -> torch.Tensor:
        """Scores from already preprocessed ``pixel_values`` (e.g. the reference processor's) -> ``[B]``."""
        tokens = [int(t) for t in image_grid_thw.prod(-1) // self.merge_size ** 2]
        texts = [self.chat_text(p, n) for p, n in zip(prompts, tokens)]
        batch = self.tokenizer(texts, padding=True, return_tensors="pt")
        out = self.backbone(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                            pixel_values.to(device=self.device, dtype=self.dtype), image_grid_thw.to(self.device),
                            self.reward_token_id)  # [B, 2]
        return self.scale * out[:, 0]  # [B]: mu

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``scale * mu(image, prompt)`` per pair: ``[B, 3, H, W]`` in ``[0, 1]`` and ``B`` prompts -> ``[B]``."""
        if isinstance(prompts, str):
            raise TypeError("score takes a sequence of prompts, not one string: wrap it in a list")
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts: give one prompt per image")
        pixel_values, grid = self.pixel_values(images)
        return self.score_pixels(pixel_values, grid, prompts)

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.score(images, prompts)

    def save_pretrained(self, folder: Path | str) -> Path:
        """Write ``config.json``, ``model.safetensors``, the tokenizer and ``hpsv3_head.json`` to ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.config.save_pretrained(folder)
        state = {k: v.detach().contiguous().cpu() for k, v in self.backbone.state_dict().items()}
        save_file(state, str(folder / OWN_WEIGHTS))
        self.tokenizer.save_pretrained(folder)
        head = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "image_mean": list(self.mean),
                "image_std": list(self.std), "instruction": self.instruction,
                "head_outputs": self.backbone.rm_head[-1].out_features}
        (folder / HEAD_FILE).write_text(json.dumps(head, indent=2))
        return folder


# -- loading ---------------------------------------------------------------------------------

def authors_to_own_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' transformers-4.45 keys (``visual.*``, ``model.*``) to ``Qwen2VLModel``'s
    (``model.visual.*``, ``model.language_model.*``); ``lm_head`` is dropped, ``rm_head`` kept."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("lm_head."):
            continue
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model.") and not key.startswith(("model.visual.", "model.language_model.")):
            key = "model.language_model." + key[len("model."):]
        out[key] = value
    return out


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from ``.safetensors`` or a torch file (``weights_only=True``; bare or under ``"model"``)."""
    from srpo.rewards.open_clip_reward import read_state_dict

    if path.suffix == ".safetensors":
        return read_state_dict(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} is not a state dict: give HPSv3.safetensors or a folder saved by HPSv3Reward")
    return dict(obj)


def find_weights(folder: Path) -> tuple[Path, bool]:
    """The weights file in ``folder`` and whether it is in the authors' key layout."""
    if (folder / OWN_WEIGHTS).is_file():
        return folder / OWN_WEIGHTS, False
    for name in AUTHOR_WEIGHTS:
        if (folder / name).is_file():
            return folder / name, True
    raise FileNotFoundError(f"HPSv3 checkpoint folder {folder} holds none of {OWN_WEIGHTS}, "
                            f"{', '.join(AUTHOR_WEIGHTS)}: give a folder written by HPSv3Reward.save_pretrained "
                            "or one with the authors' HPSv3.safetensors")


def local_folder(location: str) -> Path:
    """A local folder for a path, fsspec URL or hub id (hub ids are downloaded by huggingface_hub)."""
    resolved = resolve_model_location(location)
    if Path(resolved).exists():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved))


def load_hpsv3_network(weights: Path, authors: bool, config_folder: Path, vocab: int | None = None) -> HPSv3Network:
    """Build the network from ``config_folder/config.json`` and load ``weights`` strictly."""
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig.from_pretrained(str(config_folder))
    state = read_weights(weights)
    state = authors_to_own_keys(state) if authors else state
    embed = state.get("model.language_model.embed_tokens.weight")
    if embed is not None:  # the authors resized the embeddings to the tokenizer (with <|Reward|>)
        config.text_config.vocab_size = embed.shape[0]
    head_outputs = state["rm_head.5.weight"].shape[0] if "rm_head.5.weight" in state else 2
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (rotary) real
        network = HPSv3Network(config, head_outputs)
    missing, unexpected = network.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the weights in {weights} do not fit HPSv3 on config {config_folder}/config.json: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}; give the config.json of the "
                         "Qwen2-VL the checkpoint was trained from (processor_path)")
    network.model.rope_deltas = None
    return network.float()


def load_hpsv3_reward(config: RewardConfig) -> HPSv3Reward:
    """The HPSv3 reward that ``config`` describes (a folder, fsspec URL, hub id or ``builtin:tiny``)."""
    from transformers import AutoTokenizer

    if config.is_builtin:
        folder = resolve_builtin("reward", config.checkpoint, family=config.name, seed=config.seed)
    else:
        location = config.checkpoint or DEFAULT_CHECKPOINTS["hpsv3"]
        folder = local_folder(location) if not location.endswith((".safetensors", ".pth", ".pt")) \
            else resolve_local(location)
    if folder.is_file():
        weights, authors = folder, True
    else:
        weights, authors = find_weights(folder)
    config_folder = local_folder(config.processor_path) if config.processor_path else (
        folder if folder.is_dir() and (folder / "config.json").is_file() else local_folder(DEFAULT_PROCESSOR))
    tokenizer = AutoTokenizer.from_pretrained(str(config_folder), padding_side="right")
    if REWARD_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
    network = load_hpsv3_network(weights, authors, config_folder)
    head_file = config_folder / HEAD_FILE
    head = json.loads(head_file.read_text()) if head_file.is_file() else {}
    return HPSv3Reward(network, tokenizer, scale=1.0 if config.scale is None else config.scale,
                       min_pixels=head.get("min_pixels", HPSV3_PIXELS), max_pixels=head.get("max_pixels", HPSV3_PIXELS),
                       mean=head.get("image_mean", CLIP_MEAN), std=head.get("image_std", CLIP_STD),
                       instruction=head.get("instruction", INSTRUCTION))


# -- builtin:tiny ----------------------------------------------------------------------------

#: A tiny Qwen2-VL of the same architecture: 2 vision blocks, 2 decoder layers, 28-pixel patches
#: windows at 56 x 56 (4 patches, 1 merged image token).
TINY_PIXELS = 56 * 56


def tiny_qwen2vl_config(tokenizer):
    """A tiny ``Qwen2VLConfig`` (Qwen2-VL's architecture, widths of 32) whose token ids are ``tokenizer``'s."""
    from transformers import Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_TOKENS}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"])


def tiny_qwen2vl_tokenizer():
    """A byte-level BPE tokenizer with Qwen2-VL's chat tokens and ``<|Reward|>``, trained offline on the
    instruction text (a few hundred merges, so a sequence is a few hundred tokens, not thousands)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [*CHAT_TOKENS, REWARD_TOKEN]
    trainer = trainers.BpeTrainer(vocab_size=768, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [INSTRUCTION, RATING_SUFFIX, SYSTEM_TURN, "a photo of a bright vivid red circle on a dark muted"]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   additional_special_tokens=specials[1:], padding_side="right")


def build_tiny_hpsv3(seed: int, name: str = "hpsv3") -> Path:
    """Folder ``cache_dir()/builtin/hpsv3-tiny-<seed>/``: a seeded random tiny HPSv3 (made once). ``name``:
    the registry's one builder signature (unused)."""

    def build(folder: Path) -> None:
        tokenizer = tiny_qwen2vl_tokenizer()
        config = tiny_qwen2vl_config(tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = HPSv3Network(config)
        HPSv3Reward(network, tokenizer, min_pixels=TINY_PIXELS, max_pixels=TINY_PIXELS).save_pretrained(folder)

    return build_once(cache_dir() / "builtin" / f"hpsv3-tiny-{seed}", build)
