"""Label maps: the one region representation the rest of the library uses.

A label map is an integer array [H,W] whose values are 0..K-1 with every value present:
every pixel belongs to exactly one region. Proposers (SAM, superpixels) produce masks or
raw segmentations; the helpers here turn them into tidy label maps (small regions merged
into the neighbour they share the longest border with, uncovered pixels gathered into one
background region, labels renumbered by decreasing area so label 0 is the largest region),
and back into a stack of boolean masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage


def _as_numpy_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    a = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if a.ndim != 2:
        raise ValueError(f"a label map is [H,W]; got shape {a.shape}")
    if a.dtype.kind not in "iub":
        raise ValueError(f"a label map holds integers; got dtype {a.dtype}")
    return a.astype(np.int64)


def relabel_by_area(labels: np.ndarray) -> np.ndarray:
    """Renumber to 0..K-1, largest region first (ties by old label), so labels are dense and stable."""
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((values, -counts))  # by area descending, then by old value
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse].reshape(labels.shape).astype(np.int64)


def _neighbour_counts(labels: np.ndarray, region: np.ndarray) -> dict[int, int]:
    """How many border pixels of ``region`` touch each other label (4-connectivity), on its bounding box."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, labels.shape[0])
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, labels.shape[1])
    reg = region[y0:y1, x0:x1]
    ring = ndimage.binary_dilation(reg, structure=ndimage.generate_binary_structure(2, 1)) & ~reg
    vals, counts = np.unique(labels[y0:y1, x0:x1][ring], return_counts=True)
    return dict(zip(vals.tolist(), counts.tolist()))


def merge_small_regions(
    labels: np.ndarray | torch.Tensor,
    min_area: int,
    *,
    max_regions: int | None = None,
    background: int | None = None,
) -> np.ndarray:
    """Merge every region smaller than ``min_area`` pixels into the neighbour with which it shares
    the longest border (a real neighbour is preferred to ``background``, which absorbs a small
    region only when it touches nothing else); then, while more than ``max_regions`` remain,
    merge the smallest one the same way. Returns a dense label map (see :func:`relabel_by_area`).
    """
    lab = relabel_by_area(_as_numpy_labels(labels))
    if max_regions is not None and max_regions < 1:
        raise ValueError(f"max_regions must be at least 1, got {max_regions}")
    if background is not None:
        bg_pixels = _as_numpy_labels(labels) == background
        background = int(lab[bg_pixels][0]) if bg_pixels.any() else None
    counts = np.bincount(lab.ravel()).astype(np.int64)
    alive = counts > 0
    while alive.sum() > 1:
        live = np.flatnonzero(alive)
        victim = int(live[np.argmin(counts[live])])  # smallest; ties -> lowest label
        too_many = max_regions is not None and len(live) > max_regions
        if counts[victim] >= min_area and not too_many:
            break
        region = lab == victim
        neighbours = _neighbour_counts(lab, region)
        neighbours.pop(victim, None)
        real = {k: v for k, v in neighbours.items() if k != background}
        pool = real or neighbours
        if pool:
            target = max(pool, key=lambda k: (pool[k], -k))
        else:  # cannot happen for a region smaller than the image; merge into the largest to be safe
            target = int(live[np.argmax(np.where(live == victim, -1, counts[live]))])
        lab[region] = target
        counts[target] += counts[victim]
        counts[victim] = 0
        alive[victim] = False
    return relabel_by_area(lab)


def masks_to_labels(
    masks: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    shape: tuple[int, int] | None = None,
    *,
    min_area: int = 0,
    max_regions: int | None = None,
) -> np.ndarray:
    """Overlapping binary masks (SAM style) -> a label map covering every pixel.

    Masks are painted largest first, so a small mask inside a large one keeps its own label;
    pixels no mask covers become one background region. Regions smaller than ``min_area``
    are merged into a neighbour (or the background), and at most ``max_regions`` are kept.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    stack = [np.asarray(m).astype(bool) for m in masks]
    if shape is None:
        if not stack:
            raise ValueError("masks_to_labels: no masks and no shape given")
        shape = stack[0].shape
    h, w = shape
    lab = np.zeros((h, w), dtype=np.int64)  # 0 = background (uncovered)
    areas = [int(m.sum()) for m in stack]
    for rank, i in enumerate(sorted(range(len(stack)), key=lambda i: -areas[i])):
        m = stack[i]
        if m.shape != (h, w):
            raise ValueError(f"mask {i} has shape {m.shape}, expected {(h, w)}")
        if areas[i]:
            lab[m] = rank + 1
    # A mask can be wholly covered by smaller masks painted after it; its label then vanishes (fine).
    # Split masks painted over into disconnected pieces are kept as one region: SAM masks may be
    # disconnected by design (an object behind a pole), and the region's reward is a mean anyway.
    return merge_small_regions(lab, min_area, max_regions=max_regions, background=0)


def regions_to_masks(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Label map [H,W] with labels 0..K-1 -> boolean masks [K,H,W] (mask k = pixels of label k)."""
    lab = torch.as_tensor(_as_numpy_labels(labels) if not isinstance(labels, torch.Tensor) else labels).long()
    if lab.ndim != 2:
        raise ValueError(f"a label map is [H,W]; got shape {tuple(lab.shape)}")
    k = int(lab.max()) + 1 if lab.numel() else 0
    return lab.unsqueeze(0) == torch.arange(k, device=lab.device).view(-1, 1, 1)


def labels_from_mask_batch(masks: torch.Tensor, *, min_area: int = 0) -> torch.Tensor:
    """A ComfyUI-style MASK batch [N,H,W] (0..1, one mask per region) -> label map LongTensor [H,W]."""
    m = masks
    if m.ndim == 4:
        m = m[:, 0]
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3:
        raise ValueError(f"expected a MASK batch [N,H,W]; got shape {tuple(masks.shape)}")
    return torch.from_numpy(masks_to_labels(m > 0.5, tuple(m.shape[-2:]), min_area=min_area))


def colour_overlay(image: torch.Tensor, labels: np.ndarray | torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """[C,H,W] image (grey or RGB, 0..1) with each region tinted a distinct colour and borders drawn dark."""
    lab = torch.as_tensor(_as_numpy_labels(labels) if not isinstance(labels, torch.Tensor) else labels).long()
    img = image.float().cpu()
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
    k = int(lab.max()) + 1
    # Golden-ratio hues give neighbouring labels well separated colours.
    hues = (torch.arange(k, dtype=torch.float32) * 0.618034) % 1.0
    palette = _hsv_to_rgb(hues, torch.full_like(hues, 0.75), torch.full_like(hues, 0.95))  # [K,3]
    tint = palette[lab].permute(2, 0, 1)
    out = (1 - alpha) * img + alpha * tint
    border = torch.zeros_like(lab, dtype=torch.bool)
    border[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    border[1:, :] |= lab[1:, :] != lab[:-1, :]
    out[:, border] = out[:, border] * 0.2
    return out.clamp(0, 1)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    i = torch.floor(h * 6) % 6
    f = h * 6 - torch.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = torch.zeros(h.shape[0], 3)
    for idx, (r, g, b) in enumerate(table):
        sel = i == idx
        rgb[sel] = torch.stack((r[sel], g[sel], b[sel]), dim=-1)
    return rgb
