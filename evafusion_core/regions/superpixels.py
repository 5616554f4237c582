"""Superpixel regions: the proposer to use when no SAM checkpoint is at hand.

SLIC (default) or Felzenszwalb from scikit-image, run on a stack of both sources (IR and the
visible luma, plus visible chroma when present), so a boundary seen by either camera can
split regions: a warm pedestrian in the dark is a region because IR sees it, a road marking
because the visible camera does. Both are cheap (tens of milliseconds on a 256x256 crop).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from .labels import merge_small_regions

log = logging.getLogger(__name__)

SUPERPIXEL_METHODS = ("slic", "felzenszwalb")


def _stack_sources(ir: torch.Tensor, vis: torch.Tensor) -> np.ndarray:
    """[1|3,H,W] IR and [1|3,H,W] visible (0..1) -> [H,W,C] float array for scikit-image."""
    from ..colour import luma, rgb_to_ycbcr

    ir_y = luma(ir.float().cpu())
    if vis.shape[0] == 3:
        ycc = rgb_to_ycbcr(vis.float().cpu())
        # Chroma is weaker evidence of a boundary than luma; keep it but at half weight.
        chans = [ir_y[0], ycc[0], 0.5 * (ycc[1] - 0.5) + 0.5, 0.5 * (ycc[2] - 0.5) + 0.5]
    else:
        chans = [ir_y[0], vis.float().cpu()[0]]
    return torch.stack(chans, dim=-1).numpy().astype(np.float64)


def superpixel_regions(
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    method: str = "slic",
    n_segments: int = 48,
    compactness: float = 0.1,
    scale: float = 60.0,
    sigma: float = 0.8,
    min_area: int | None = None,
    max_regions: int | None = None,
) -> torch.Tensor:
    """Label map LongTensor [H,W] (labels 0..K-1, every pixel covered) from superpixels of IR + visible.

    ``ir`` and ``vis`` are [C,H,W] or [1,C,H,W] in 0..1. ``slic`` uses ``n_segments`` and
    ``compactness`` (on 0..1 data ~0.05-0.3: higher is squarer); ``felzenszwalb`` uses ``scale``
    and ``sigma``. Regions under ``min_area`` pixels (default: 1/4 of the mean superpixel) merge
    into their neighbour.
    """
    from skimage.segmentation import felzenszwalb, slic

    if ir.ndim == 4:
        ir = ir[0]
    if vis.ndim == 4:
        vis = vis[0]
    if ir.shape[-2:] != vis.shape[-2:]:
        raise ValueError(f"IR {tuple(ir.shape[-2:])} and visible {tuple(vis.shape[-2:])} sizes differ")
    stack = _stack_sources(ir, vis)
    h, w = stack.shape[:2]
    if method == "slic":
        seg = slic(stack, n_segments=n_segments, compactness=compactness, channel_axis=-1, start_label=0,
                   enforce_connectivity=True, convert2lab=False)
    elif method == "felzenszwalb":
        with warnings.catch_warnings():  # it warns about any 4-channel stack, which is what we mean here
            warnings.filterwarnings("ignore", message="Got image with third dimension")
            seg = felzenszwalb(stack, scale=scale, sigma=sigma, min_size=max(4, (h * w) // (8 * n_segments)),
                               channel_axis=-1)
    else:
        raise ValueError(f"unknown superpixel method {method!r}; choose one of {', '.join(SUPERPIXEL_METHODS)}")
    if min_area is None:
        min_area = max(1, (h * w) // (4 * max(n_segments, 1)))
    labels = merge_small_regions(seg, min_area, max_regions=max_regions)
    return torch.from_numpy(labels)
