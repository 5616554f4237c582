"""Training curves as PNGs drawn with PIL (no matplotlib needed): one small panel per series. Used by
GRPO runs, reward-model training and the GRPO Step node."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .io import atomic_write_bytes

Series = dict[str, tuple[Sequence[float], Sequence[float]]]

_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def _finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    pts = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(ys: list[float], window: int) -> list[float]:
    if window <= 1 or len(ys) < 3:
        return ys
    a = np.asarray(ys)
    k = min(window, len(a))
    c = np.cumsum(np.insert(a, 0, 0.0))
    out = [(c[i + 1] - c[max(0, i + 1 - k)]) / (i + 1 - max(0, i + 1 - k)) for i in range(len(a))]
    return out


def plot_panels(panels: dict[str, Series], *, width: int = 360, height: int = 200, columns: int = 3,
                smooth: int = 1, raw_panels: tuple[str, ...] = ()) -> Image.Image:
    """``{panel title: {line label: (xs, ys)}}`` -> one image with a grid of line plots.

    Lines are drawn raw (light) and, with ``smooth`` > 1, as a running mean (dark); panels named in
    ``raw_panels`` (sparse series such as evaluations) are never smoothed."""
    names = list(panels)
    cols = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    img = Image.new("RGB", (cols * width, rows * height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for idx, title in enumerate(names):
        ox, oy = (idx % cols) * width, (idx // cols) * height
        left, top, right, bottom = ox + 48, oy + 20, ox + width - 10, oy + height - 22
        draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
        draw.text((ox + 6, oy + 4), title, fill=(0, 0, 0))
        lines = {k: _finite(*v) for k, v in panels[title].items()}
        lines = {k: v for k, v in lines.items() if v[0]}
        if not lines:
            draw.text((left + 8, top + 8), "no data", fill=(128, 128, 128))
            continue
        xs_all = [x for xs, _ in lines.values() for x in xs]
        ys_all = [y for _, ys in lines.values() for y in ys]
        x0, x1 = min(xs_all), max(xs_all)
        y0, y1 = min(ys_all), max(ys_all)
        single_x = x0 if x1 == x0 else None  # e.g. the first validation: drawn in the middle, labelled once
        if single_x is not None:
            x0, x1 = x0 - 1, x1 + 1
        if y1 == y0:
            y0, y1 = y0 - 0.5 * (abs(y0) or 1) * 0.01, y1 + 0.5 * (abs(y1) or 1) * 0.01
        box = (left, top, right, bottom, x0, x1, y0, y1)

        def sx(x: float, b=box) -> float:
            return b[0] + (x - b[4]) / (b[5] - b[4]) * (b[2] - b[0])

        def sy(y: float, b=box) -> float:
            return b[3] - (y - b[6]) / (b[7] - b[6]) * (b[3] - b[1])

        draw.text((ox + 2, top - 2), f"{y1:.4g}", fill=(90, 90, 90))
        draw.text((ox + 2, bottom - 10), f"{y0:.4g}", fill=(90, 90, 90))
        if single_x is not None:
            draw.text(((left + right) // 2 - 10, bottom + 4), f"{single_x:g}", fill=(90, 90, 90))
        else:
            draw.text((left, bottom + 4), f"{x0:g}", fill=(90, 90, 90))
            draw.text((right - 40, bottom + 4), f"{x1:g}", fill=(90, 90, 90))
        for li, (label, (xs, ys)) in enumerate(lines.items()):
            colour = _COLOURS[li % len(_COLOURS)]
            light = tuple(int(c + (255 - c) * 0.6) for c in colour)
            raw = [(sx(x), sy(y)) for x, y in zip(xs, ys)]
            if smooth > 1 and len(raw) > 2 and title not in raw_panels:
                draw.line(raw, fill=light, width=1)
                raw = [(sx(x), sy(y)) for x, y in zip(xs, _smooth(ys, smooth))]
            if len(raw) == 1:
                draw.ellipse([raw[0][0] - 2, raw[0][1] - 2, raw[0][0] + 2, raw[0][1] + 2], fill=colour)
            else:
                draw.line(raw, fill=colour, width=2)
            if len(lines) > 1:
                draw.text((left + 6, top + 4 + 11 * li), label, fill=colour)
    return img


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> [3,H,W] float 0..1."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def save_png(img: Image.Image, path: str | os.PathLike) -> None:
    """Write atomically, so a viewer refreshing the file during training never sees half a PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
