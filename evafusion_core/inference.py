"""Running a fusion network on real images: colour, padding, tiling, batching, device.

Networks see luma only (see :mod:`evafusion_core.colour`); this module takes IR and
visible tensors of any size, pads them to the network's multiple, splits large
images into overlapping tiles blended with a smooth window (memory stays bounded
and seams do not show), runs batches on the chosen device and precision, and puts
the visible image's colour back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .colour import luma, recolour
from .errors import PairError
from .io import check_finite
from .models.base import FusionNet


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def _run(model: FusionNet, ir: torch.Tensor, vis: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One forward on padded inputs, cropped back; autocast only where reduced precision is asked for."""
    ir_p, (h, w) = _pad_to(ir, model.pad_multiple)
    vis_p, _ = _pad_to(vis, model.pad_multiple)
    if dtype != torch.float32 and ir.device.type == "cuda":
        with torch.autocast("cuda", dtype=dtype):
            out = model(ir_p, vis_p)
    else:
        out = model(ir_p, vis_p)
    return out[..., :h, :w].float()


def _window(n: int, overlap: int, device: torch.device) -> torch.Tensor:
    """1-D blending weights: a linear ramp over the overlap at each end, never exactly zero."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        ramp = torch.linspace(0, 1, overlap + 2, device=device)[1:-1]
        w[:overlap] = ramp
        w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _run_tiled(model: FusionNet, ir: torch.Tensor, vis: torch.Tensor, dtype: torch.dtype, tile: int, overlap: int):
    b, _, h, w = ir.shape
    th, tw = min(tile, h), min(tile, w)
    out = torch.zeros(b, 1, h, w, device=ir.device)
    weight = torch.zeros(1, 1, h, w, device=ir.device)
    for y in _starts(h, th, th - overlap):
        for x in _starts(w, tw, tw - overlap):
            sl = (..., slice(y, y + th), slice(x, x + tw))
            win = _window(th, min(overlap, th // 2), ir.device)[:, None] * _window(tw, min(overlap, tw // 2), ir.device)
            out[sl] += _run(model, ir[sl], vis[sl], dtype) * win
            weight[sl] += win
    return out / weight


def check_pair_batch(ir: torch.Tensor, vis: torch.Tensor) -> None:
    """IR and visible batches must agree in batch size and spatial size; say which way they differ."""
    if ir.ndim != 4 or vis.ndim != 4:
        raise PairError(f"expected [B,C,H,W] tensors, got IR {tuple(ir.shape)} and visible {tuple(vis.shape)}")
    if ir.shape[0] != vis.shape[0]:
        raise PairError(f"batch size mismatch: {ir.shape[0]} IR images but {vis.shape[0]} visible images")
    if ir.shape[-2:] != vis.shape[-2:]:
        raise PairError(
            f"size mismatch: IR is {ir.shape[-1]}x{ir.shape[-2]} but visible is {vis.shape[-1]}x{vis.shape[-2]}"
            " (width x height)"
        )
    for t, name in ((ir, "IR"), (vis, "visible")):
        if t.shape[1] not in (1, 3):
            raise PairError(f"{name} image has {t.shape[1]} channels; expected 1 (grey) or 3 (RGB)")
        check_finite(t, f"{name} input")


@torch.no_grad()
def fuse_luma(
    model: FusionNet,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    tile: int | None = None,
    overlap: int = 32,
    batch_size: int = 4,
    dtype: torch.dtype = torch.float32,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Fused luma [B,1,H,W] for IR/visible batches [B,C,H,W] (C 1 or 3), computed on the model's device.

    ``tile`` bounds memory: images larger than ``tile`` pixels on a side are fused
    tile by tile with ``overlap`` pixels blended. ``on_batch(n)`` is called after each
    chunk of ``n`` images, for progress bars and cancellation.
    """
    check_pair_batch(ir, vis)
    device = next((p.device for p in model.parameters()), ir.device)
    outs = []
    for i in range(0, ir.shape[0], batch_size):
        a = luma(ir[i : i + batch_size]).to(device, torch.float32)
        b = luma(vis[i : i + batch_size]).to(device, torch.float32)
        if tile and max(a.shape[-2:]) > tile:
            y = _run_tiled(model, a, b, dtype, tile, overlap)
        else:
            y = _run(model, a, b, dtype)
        outs.append(y.clamp(0, 1).cpu())
        if on_batch:
            on_batch(a.shape[0])
    return torch.cat(outs)


def fuse(model: FusionNet, ir: torch.Tensor, vis: torch.Tensor, **kwargs) -> torch.Tensor:
    """Fused image [B,C,H,W] with the visible image's colour (C = 3) or grey (C = 1); see :func:`fuse_luma`."""
    y = fuse_luma(model, ir, vis, **kwargs)
    return recolour(y, vis.float().cpu())
