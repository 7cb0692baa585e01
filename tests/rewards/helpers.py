"""Shared helpers for the reward tests."""

import torch
import torch.nn.functional as F

from srpo.rewards.base import FrozenReward
from srpo.world.shapes import COLOUR_NAMES, COLOURS, hsv_to_rgb


class PaletteReward(FrozenReward):
    """A feature reward that reads colours: image features are the pixels' soft share of each palette
    colour, text features the colour words a text names (differentiable in the images)."""

    scale = 1.0

    def __init__(self):
        super().__init__()
        hues = torch.tensor(list(COLOURS.values()))
        self.register_buffer("palette", hsv_to_rgb(hues, torch.ones(5), torch.ones(5)))  # [5, 3]
        self.freeze()

    def image_features(self, images):
        chroma = lambda rgb: F.normalize(rgb - rgb.mean(-1, keepdim=True), dim=-1)  # noqa: E731  hue direction
        cos = chroma(images.permute(0, 2, 3, 1)) @ chroma(self.palette).T  # [B, H, W, 5]
        return F.normalize(torch.softmax(cos / 0.05, -1).mean((1, 2)), dim=-1)  # [B, 5]

    def text_features(self, prompts):
        return F.normalize(torch.tensor([[float(c in p.split()) for c in COLOUR_NAMES] for p in prompts]) + 1e-3, dim=-1)
