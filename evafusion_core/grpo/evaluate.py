"""Held-out evaluation of a fusion network: reward-model scores, heatmap mass and objective metrics.

Used for early stopping during training (on a validation split) and for the final comparison of
fine-tuned networks against the reference (on held-out datasets). Metrics are computed as the
published toolkits do, on 8-bit images (``tang`` convention by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..colour import luma, recolour
from ..io import find_pairs, load_pair, resize_to, to_uint8

EARLY_STOP_METRICS = ("Qabf", "VIF", "MI", "SSIM")

Pair = tuple[str, torch.Tensor, torch.Tensor]


def fit_pair(ir: torch.Tensor, vis: torch.Tensor, max_side: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """IR [1,H,W] and visible (grey promoted to [3,H,W]) scaled so the longer side is at most ``max_side``."""
    vis = vis.expand(3, -1, -1) if vis.shape[0] == 1 else vis[:3]
    h, w = ir.shape[-2:]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        size = (max(8, round(h * s)), max(8, round(w * s)))
        ir, vis = resize_to(ir, size).clamp(0, 1), resize_to(vis, size).clamp(0, 1)
    return ir.contiguous(), vis.contiguous()


def load_pairs(folder: str | os.PathLike, *, max_side: int = 0, names: list[str] | None = None) -> list[Pair]:
    """``(stem, ir [1,H,W], vis [3,H,W])`` for every pair of ``folder/ir`` + ``folder/vi``, scaled by
    :func:`fit_pair` (``max_side`` 0: full size)."""
    root = Path(folder)
    out = []
    for stem, (a, b) in find_pairs(root / "ir", root / "vi"):
        if names is None or stem in names:
            out.append((stem, *fit_pair(*load_pair(a, b, resize=True), max_side)))
    return out


@torch.no_grad()
def evaluate_pairs(
    model: torch.nn.Module,
    pairs: list[Pair],
    reward_model: torch.nn.Module | None,
    *,
    metrics: tuple[str, ...] | list[str] = EARLY_STOP_METRICS,
    convention: str = "tang",
    reward_weights: list[float] | None = None,
    heatmap_threshold: float = 0.5,
    per_image: bool = False,
) -> dict:
    """Means over ``pairs`` of: reward scores (1..5, every dimension; ``overall``), the weighted reward
    (0..1, with ``reward_weights``), artifact-heatmap mass (mean heatmap value) and white ratio, and
    the objective ``metrics``. ``reward_model=None`` skips the reward terms."""
    from ..inference import fuse_luma
    from ..metrics import compute_metrics
    from ..reward import DIMENSIONS
    from .objectives import weighted_score

    model.eval()
    rows = []
    for stem, ir, vis in pairs:
        fused_y = fuse_luma(model, ir[None], luma(vis[None]))
        fused = recolour(fused_y, vis[None].float())[0]
        row: dict = {"name": stem}
        if metrics:
            u8 = lambda t: to_uint8(t).astype("float64")  # noqa: E731 - as the saved 8-bit files score
            row.update(compute_metrics(u8(ir), u8(vis), u8(fused), convention=convention, names=list(metrics)))
        if reward_model is not None:
            pred = reward_model.predict(fused[None], ir[None], vis[None])
            for k, name in enumerate(DIMENSIONS):
                row[name] = float(pred["scores"][0, k])
            heat = pred["heatmap"][0]
            row["heat_mass"] = float(heat.mean())
            row["white_ratio"] = float((heat >= heatmap_threshold).float().mean())
            if reward_weights is not None:
                row["reward"] = float(weighted_score(pred["scores"][:1] / 5.0, reward_weights)[0])
        rows.append(row)
    keys = [k for k in rows[0] if k != "name"]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    result = {"n": len(rows), "mean": mean}
    if "Overall" in mean:
        result["overall"] = mean["Overall"]
    if per_image:
        result["images"] = rows
    return result


def relative_to(result: dict, reference: dict, names: list[str] | tuple[str, ...]) -> dict[str, float]:
    """``metric / reference metric`` for each name (1.0 = unchanged)."""
    out = {}
    for m in names:
        ref = reference["mean"][m]
        out[m] = result["mean"][m] / ref if ref else float("nan")
    return out
