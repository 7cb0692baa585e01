"""PNG figures with Pillow alone: labelled image grids and simple line charts."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """[3, H, W] in [0, 1] -> RGB PIL image, upscaled by ``scale`` (nearest)."""
    arr = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(arr, "RGB")
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def image_grid(rows: Sequence[torch.Tensor], labels: Sequence[str], scale: int = 2, pad: int = 4,
               label_width: int = 90, title: str = "") -> Image.Image:
    """Rows of images ([N, 3, H, W] each, same N) with a text label left of each row."""
    n, _, h, w = rows[0].shape
    cell_h, cell_w = h * scale + pad, w * scale + pad
    top = 18 if title else 0
    grid = Image.new("RGB", (label_width + n * cell_w, top + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 3), title, fill="black")
    for r, (images, label) in enumerate(zip(rows, labels)):
        y = top + r * cell_h
        draw.text((4, y + cell_h // 2 - 6), label, fill="black")
        for c in range(n):
            grid.paste(to_pil(images[c], scale), (label_width + c * cell_w, y))
    return grid


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, ylabel: str = "",
               size: tuple[int, int] = (420, 260), ylim: tuple[float, float] | None = None,
               bands: Sequence[tuple[Sequence[float], Sequence[float | None], Sequence[float | None]]] = (),
               mark_x: float | None = None) -> Image.Image:
    """A line chart of named ``(x, y)`` series with axes, ticks and a legend.

    ``bands``: ``(x, low, high)`` limits drawn as grey lines (``None``: no limit at that x);
    ``mark_x``: a vertical marker (a selected step).
    """
    width, height = size
    left, right, top, bottom = 52, 12, 24, 34
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    xs = [x for xsr, _ in series.values() for x in xsr] or [0, 1]
    ys = [y for _, ysr in series.values() for y in ysr] or [0, 1]
    ys += [y for _, lo, hi in bands for y in (*lo, *hi) if y is not None]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = ylim if ylim else (min(ys), max(ys))
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    px = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    py = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left, 5), title, fill="black")
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        draw.line([left - 3, py(y), left, py(y)], fill="black")
        draw.text((2, py(y) - 6), f"{y:.3g}", fill="black")
        x = x0 + (x1 - x0) * i / 4
        draw.line([px(x), height - bottom, px(x), height - bottom + 3], fill="black")
        draw.text((px(x) - 8, height - bottom + 5), f"{x:.0f}", fill="black")
    draw.text((width // 2 - 10, height - 14), "step", fill="black")
    if ylabel:
        draw.text((left + 4, top + 2), ylabel, fill="gray")
    for xsr, *limits in bands:
        for ysr in limits:
            points = [(px(x), py(y)) for x, y in zip(xsr, ysr) if y is not None]
            if len(points) > 1:
                draw.line(points, fill=(150, 150, 150), width=1)
    if mark_x is not None:
        draw.line([px(mark_x), top, px(mark_x), height - bottom], fill=(44, 160, 44), width=2)
        draw.text((px(mark_x) + 3, top + 2), "selected", fill=(44, 160, 44))
    for k, (name, (xsr, ysr)) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = [(px(x), py(y)) for x, y in zip(xsr, ysr)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for p in points if len(points) <= 30 else []:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        draw.text((left + 6, height - bottom - 14 - 12 * (len(series) - 1 - k)), name, fill=colour)
    return img


def side_by_side(images: Sequence[Image.Image], pad: int = 8) -> Image.Image:
    """Images placed left to right on a white canvas."""
    width = sum(im.width for im in images) + pad * (len(images) - 1)
    out = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + pad
    return out


def guard_curves(summary: dict, columns: int = 3) -> Image.Image:
    """Every guard metric vs update (a :meth:`srpo.training.guard.Guard.summary`), with each ruled metric's
    tolerance band in grey and the selected update marked: one chart per metric in a grid."""
    checks = summary["checks"]
    steps = [c["step"] for c in checks]
    names = list(checks[0]["values"]) if checks else []
    charts = []
    for name in names:
        bands = [(steps, [c["bounds"][name][0] for c in checks], [c["bounds"][name][1] for c in checks])] \
            if name in checks[0]["bounds"] else []
        finite = [(c["step"], c["values"][name]) for c in checks if c["values"][name] == c["values"][name]]  # no NaN
        charts.append(line_chart({name: ([x for x, _ in finite], [y for _, y in finite])}, f"guard: {name}",
                                 bands=bands, mark_x=summary.get("selected_update"), size=(360, 220)))
    if not charts:
        return Image.new("RGB", (360, 40), "white")
    rows = [side_by_side(charts[i:i + columns]) for i in range(0, len(charts), columns)]
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        out.paste(row, (0, y))
        y += row.height
    return out
