"""Image files and data URIs: tensors ``[3, H, W]`` in ``[0, 1]`` <-> PNG/JPEG."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import torch


def to_pil(image: torch.Tensor):
    """``[3, H, W]`` floats in ``[0, 1]`` -> an RGB ``PIL.Image`` (rounded to 8 bits)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape [3, H, W], got {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write ``image`` ``[3, H, W]`` as a PNG (8 bits per channel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG")
    return path


def load_image(path: Path | str) -> torch.Tensor:
    """An image file -> ``[3, H, W]`` floats in ``[0, 1]``."""
    from PIL import Image

    with Image.open(path) as img:
        array = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
        w, h = img.size
    return array.view(h, w, 3).permute(2, 0, 1).float() / 255.0


def data_uri(path: Path | str, max_side: int, fmt: str = "JPEG", quality: int = 90) -> str:
    """``data:image/...;base64,...`` of the image at ``path``, downscaled to ``max_side``."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if fmt.upper() == "JPEG":
            img.save(buf, format="JPEG", quality=quality)
            mime = "image/jpeg"
        else:
            img.save(buf, format="PNG")
            mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
