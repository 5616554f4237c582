"""Synthetic IVIF artifacts with known places and strengths: labels for pre-training a reward model.

Without the human-feedback set, a reward model can learn what people penalise from
degradations injected into clean fused images: the injected mask times the strength is
the heatmap label, and the strength maps monotonically onto the score dimensions each
artifact hurts (Overall from all of them). Clean fused images come from several fusion
methods (the project's ``light``, ``average``, ``max``, ``laplacian``, and published
methods' outputs when present) so that no method's look becomes a shortcut.

Every artifact is scale-aware: sizes (blur radii, block sizes, noise grain, stripe
periods) are given for a 256-pixel image and scaled with ``min(H, W) / 256``, so an
artifact injected at full resolution looks the same to the model, after it resizes the
image, as one injected at the training resolution.

Determinism: a sample is a pure function of ``(seed, index)``; an artifact is a pure
function of its :class:`ArtifactSpec` (name, strength, seed), so a strength ladder
(same mask and parameters, strength varied) isolates the effect of strength.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import luma, recolour, rgb_to_ycbcr, ycbcr_to_rgb

log = logging.getLogger(__name__)

DIMENSIONS = ("Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall")

#: How much an artifact of severity 1 costs each dimension (Thermal, Texture, Artifacts, Sharpness),
#: as a fraction of the 4-point range. Overall follows from all four (see :func:`scores_for`).
ARTIFACT_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "halo": (0.3, 0.1, 1.0, 0.1),
    "ghosting": (0.1, 0.5, 0.9, 0.5),
    "thermal_loss": (1.0, 0.1, 0.2, 0.0),
    "texture_loss": (0.0, 1.0, 0.1, 0.4),
    "oversaturation": (0.3, 0.6, 0.7, 0.1),
    "noise": (0.1, 0.3, 1.0, 0.3),
    "blur": (0.1, 0.6, 0.2, 1.0),
    "blocking": (0.0, 0.5, 1.0, 0.4),
    "stripes": (0.1, 0.2, 1.0, 0.1),
    "colour_cast": (0.2, 0.2, 0.8, 0.0),
    "contrast_loss": (0.6, 0.6, 0.2, 0.3),
    "ringing": (0.0, 0.2, 0.9, 0.0),
}
ARTIFACTS: tuple[str, ...] = tuple(ARTIFACT_WEIGHTS)
#: Artifacts that may cover the whole image (noise everywhere, the visible image alone, ...).
P_GLOBAL = 0.15
GLOBAL_OK = {"ghosting", "thermal_loss", "texture_loss", "noise", "blur", "blocking", "stripes", "colour_cast",
             "contrast_loss"}

#: Visible-only detail of this mean amplitude (high-pass, 0..1 luma) or more is fully visible when lost.
DETAIL_REFERENCE = 0.04
#: Label schemes: "relative" scores artifacts against the clean fusion (every clean fusion scores 5);
#: "retention" also charges a clean fusion the IR contrast and visible detail it did not keep;
#: "targets" is "retention" that also sees small thermal targets (see :data:`MIN_TARGET_AREA` and
#: :func:`_thermal_loss`): a night scene's few warm people count whether a fusion method or a
#: thermal-loss artifact drops them.
LABELS = ("relative", "retention", "targets")
#: Hot targets must cover this fraction of the image to be charged for under each retention scheme.
#: "retention"'s 0.5% let the visible image alone score as well as a good fusion on night scenes
#: whose people cover 0.1-0.4% of the frame (msrs34), a cliff the model could only blur over.
MIN_TARGET_AREA = {"retention": 0.005, "targets": 0.0005}
#: The scheme the bundled reward model was trained on and is benchmarked with (``eval-reward``'s default).
#: Configs without ``synthetic.labels`` keep meaning "relative", as when they were written.
BENCHMARK_LABELS = "targets"

FUSION_BASELINES = ("light", "average", "max", "laplacian")
PUBLISHED_METHODS = ("SeAFusion", "IFCNN", "DenseFuse")


# --------------------------------------------------------------------------------------------
# small image operations on [C,H,W] tensors
# --------------------------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur over the last two axes (reflect padding); sigma in pixels. scipy is ~10x faster
    than a torch convolution for these single-image, few-channel shapes on a CPU."""
    if sigma <= 0.05:
        return x
    from scipy.ndimage import gaussian_filter

    a = x.detach().float().cpu().numpy()
    sig = (0.0,) * (a.ndim - 2) + (float(sigma), float(sigma))
    return torch.from_numpy(gaussian_filter(a, sig, mode="reflect", truncate=3.0))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate [C,H,W] by (dy, dx) pixels, edges replicated."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    y = F.pad(x.unsqueeze(0), (p, p, p, p), mode="replicate")[0]
    return y[:, p - dy : p - dy + h, p - dx : p - dx + w]


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    kw: dict[str, Any] = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if mode == "bilinear":
        kw["antialias"] = True
    return F.interpolate(x.unsqueeze(0), size=size, mode=mode, **kw)[0]


def _as_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    if x.shape[0] == c:
        return x
    return x.expand(c, -1, -1).clone() if x.shape[0] == 1 else luma(x)


def _scale(h: int, w: int) -> float:
    return min(h, w) / 256.0


def _quantile(x: torch.Tensor, q: float) -> float:
    flat = x.detach().float().flatten().numpy()
    if flat.size > 50_000:  # a strided subsample is exact enough for a threshold, and fast
        flat = flat[:: int(math.ceil(flat.size / 50_000))]
    return float(np.quantile(flat, q))


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def _soften(m: torch.Tensor, scale: float) -> torch.Tensor:
    m = gaussian_blur(m, 1.5 * scale).clamp(0, 1)
    return torch.where(m < 0.04, torch.zeros_like(m), m)


def blob_mask(g: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """A random region [1,H,W] in 0..1: smooth blobs, an ellipse or a rectangle, 8-50% of the image."""
    scale = _scale(h, w)
    coverage = g.uniform(0.08, 0.5)
    kind = g.choice(3, p=[0.6, 0.25, 0.15])
    if kind == 0:
        k = int(g.integers(3, 7))
        low = torch.from_numpy(g.standard_normal((1, 1, k, k)).astype(np.float32))
        up = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
        m = (up > _quantile(up, 1 - coverage)).float()
    else:
        aspect = float(np.exp(g.uniform(-0.7, 0.7)))
        area = coverage * h * w
        a = math.sqrt(area * aspect / (math.pi if kind == 1 else 4.0))  # half-width
        b = area / ((math.pi if kind == 1 else 4.0) * a)
        cy, cx = g.uniform(0.2, 0.8) * h, g.uniform(0.2, 0.8) * w
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        if kind == 1:
            m = (((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2 <= 1).float()
        else:
            m = (((yy - cy).abs() <= b) & ((xx - cx).abs() <= a)).float()
        m = m.unsqueeze(0)
        if m.sum() < 16:
            m = torch.zeros(1, h, w)
            m[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    return _soften(m, scale)


def hot_mask(ir: torch.Tensor, g: np.random.Generator) -> torch.Tensor:
    """The hottest regions of the IR image [1,H,W] (top 5-15%, smoothed); falls back to a blob when flat."""
    h, w = ir.shape[-2:]
    scale = _scale(h, w)
    smooth = gaussian_blur(luma(ir), 2.0 * scale)
    q = g.uniform(0.85, 0.95)
    thr = _quantile(smooth, q)
    m = (smooth > thr).float()
    if float(smooth.max() - smooth.min()) < 0.05 or m.mean() < 0.005:
        return blob_mask(g, h, w)
    m = F.max_pool2d(m.unsqueeze(0), 3, stride=1, padding=1)[0]
    return _soften(m, scale)


def _region(name: str, ir: torch.Tensor, g: np.random.Generator, whole: bool = False) -> torch.Tensor:
    h, w = ir.shape[-2:]
    if whole or (name in GLOBAL_OK and g.random() < P_GLOBAL):
        return torch.ones(1, h, w)
    if name in ("thermal_loss", "oversaturation") and g.random() < 0.85:
        return hot_mask(ir, g)
    return blob_mask(g, h, w)


# --------------------------------------------------------------------------------------------
# artifacts: each takes (fused, ir, vis, strength, rng, whole) and returns (degraded, mask, visibility);
# ``whole`` asks for a whole-image mask, which halo (a ring around hot targets) has no use for
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactSpec:
    """One injected artifact. Mask and parameters depend only on ``seed``; ``strength`` (0..1] scales it.
    ``whole`` covers the whole image (only for :data:`GLOBAL_OK` artifacts): the visible image alone is
    thermal loss everywhere, the IR image alone texture loss everywhere."""

    name: str
    strength: float
    seed: int
    whole: bool = False


def _lerp(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * m


def _visibility(full_change: torch.Tensor, m: torch.Tensor, reference: float) -> float:
    """How visible an artifact can be on this content, independent of its strength: the mean
    absolute luma change *at full strength* inside the mask, relative to ``reference``, square-rooted
    and capped at 1. Losing thermal targets where IR and visible agree changes nothing; this keeps
    such cases from being labelled severe."""
    w = m.sum()
    if w <= 0:
        return 0.0
    d = float((luma(full_change).abs() * m).sum() / w)
    return min(1.0, d / reference) ** 0.5


def _blockify(f: torch.Tensor, b: int) -> torch.Tensor:
    h, w = f.shape[-2:]
    pooled = F.avg_pool2d(f.unsqueeze(0), b, stride=b, ceil_mode=True)
    return F.interpolate(pooled, scale_factor=b, mode="nearest")[0][:, :h, :w]


def _halo(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    scale = _scale(h, w)
    hot = hot_mask(ir, g)
    core = (hot > 0.5).float()
    r = max(1, int(round(g.uniform(4, 10) * scale)))
    dil = F.max_pool2d(core.unsqueeze(0), 2 * r + 1, stride=1, padding=r)[0]
    ring = (gaussian_blur(dil, r / 2) - core).clamp(0, 1)
    ring = ring / ring.max().clamp_min(1e-6)
    ring = torch.where(ring < 0.05, torch.zeros_like(ring), ring)
    sign = 1.0 if g.random() < 0.7 else -1.0
    amp = 0.08 + 0.37 * s
    return (f + sign * amp * ring).clamp(0, 1), ring, 1.0


def _ghosting(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    scale = _scale(h, w)
    m = _region("ghosting", ir, g, whole)
    ang = g.uniform(0, 2 * math.pi)
    d = g.uniform(4, 10) * scale
    dy, dx = int(round(d * math.sin(ang))), int(round(d * math.cos(ang)))
    src = f if g.random() < 0.5 else _as_channels(luma(ir), f.shape[0])
    a = 0.12 + 0.38 * s
    shifted = _shift(src, dy, dx)
    ghost = (1 - a) * f + a * shifted
    return _lerp(f, ghost, m), m, _visibility(0.5 * (shifted - f), m, 0.04)


def _thermal_loss(f, ir, vis, s, g, whole=False, focus=False):
    m = _region("thermal_loss", ir, g, whole)
    target = _as_channels(vis, f.shape[0]) if f.shape[0] == vis.shape[0] else _as_channels(luma(vis), f.shape[0])
    out = _lerp(f, target, m * s)
    if focus:
        # Label only where losing the IR changes the image (a luma change of 0.1 or more counts fully):
        # the visible image alone at night loses a few warm people, not the whole frame, and a mean
        # over the whole frame would call that loss invisible ("targets" labels).
        m = m * (luma(target - f).abs() / 0.1).clamp(0, 1)
    return out, m, _visibility(target - f, m, 0.15)


def _texture_loss(f, ir, vis, s, g, whole=False):
    m = _region("texture_loss", ir, g, whole)
    if f.shape[0] == 3 and vis.shape[0] == 3 and g.random() < 0.5:
        target = recolour(luma(ir).unsqueeze(0), vis.unsqueeze(0))[0]  # IR luma under the visible colour
    else:
        target = _as_channels(luma(ir), f.shape[0])
    return _lerp(f, target, m * s), m, _visibility(target - f, m, 0.15)


def _oversaturation(f, ir, vis, s, g, whole=False):
    m = _region("oversaturation", ir, g, whole)
    bright = (f * (1 + 1.6 * s) + 0.25 * s).clamp(0, 1)
    full = (f * 2.6 + 0.25).clamp(0, 1)
    return _lerp(f, bright, m), m, _visibility(full - f, m, 0.15)


def _noise(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    scale = max(1.0, _scale(h, w))
    m = _region("noise", ir, g, whole)
    sigma = 0.015 + 0.13 * s
    c = f.shape[0] if g.random() < 0.3 else 1
    lh, lw = max(1, int(round(h / scale))), max(1, int(round(w / scale)))
    n = torch.from_numpy(g.standard_normal((c, lh, lw)).astype(np.float32))
    n = F.interpolate(n.unsqueeze(0), size=(h, w), mode="nearest")[0]
    return (f + m * sigma * n).clamp(0, 1), m, 1.0


def _blur(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    m = _region("blur", ir, g, whole)
    vis_ = _visibility(gaussian_blur(f, 4.0 * _scale(h, w)) - f, m, 0.03)
    return _lerp(f, gaussian_blur(f, (0.6 + 3.4 * s) * _scale(h, w)), m), m, vis_


def _blocking(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    m = _region("blocking", ir, g, whole)
    b = max(2, int(round((3 + 9 * s) * _scale(h, w))))
    a = 0.35 + 0.65 * s
    b_max = max(2, int(round(12 * _scale(h, w))))
    return _lerp(f, _blockify(f, b), m * a), m, _visibility(_blockify(f, b_max) - f, m, 0.03)


def _stripes(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    scale = _scale(h, w)
    m = _region("stripes", ir, g, whole)
    vertical = g.random() < 0.5
    n = w if vertical else h
    period = g.uniform(3, 10) * scale
    phase = g.uniform(0, 2 * math.pi)
    t = torch.arange(n, dtype=torch.float32)
    wave = torch.sin(2 * math.pi * t / period + phase)
    if g.random() < 0.5:  # fixed-pattern noise of a thermal sensor: random offsets per line
        lines = torch.from_numpy(g.standard_normal(max(1, int(n / max(1.0, scale)))).astype(np.float32))
        wave = F.interpolate(lines.view(1, 1, -1), size=n, mode="nearest").view(-1).clamp(-2, 2) / 1.5
    pattern = wave.view(1, 1, n).expand(1, h, w) if vertical else wave.view(1, n, 1).expand(1, h, w)
    amp = 0.02 + 0.16 * s
    return (f + m * amp * pattern).clamp(0, 1), m, 1.0


def _colour_cast(f, ir, vis, s, g, whole=False):
    m = _region("colour_cast", ir, g, whole)
    rgb = _as_channels(f, 3)
    ycc = rgb_to_ycbcr(rgb)
    ang = g.uniform(0, 2 * math.pi)
    amp = 0.03 + 0.22 * s
    shift = torch.tensor([0.0, amp * math.cos(ang), amp * math.sin(ang)]).view(3, 1, 1)
    cast = ycbcr_to_rgb(ycc + shift)
    return _lerp(rgb, cast, m), m, 1.0


def _contrast_loss(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    m = _region("contrast_loss", ir, g, whole)
    flat = gaussian_blur(f, 12 * _scale(h, w)) if g.random() < 0.5 else f.mean(dim=(-2, -1), keepdim=True)
    flat = flat.expand_as(f)
    return _lerp(f, flat, m * (0.15 + 0.7 * s)), m, _visibility(0.85 * (flat - f), m, 0.08)


def _ringing(f, ir, vis, s, g, whole=False):
    h, w = f.shape[-2:]
    m = _region("ringing", ir, g, whole)
    detail = f - gaussian_blur(f, g.uniform(1.0, 2.5) * _scale(h, w))
    return (f + m * (0.6 + 4.4 * s) * detail).clamp(0, 1), m, _visibility(5.0 * detail, m, 0.08)


_ARTIFACT_FNS: dict[str, Callable] = {
    "halo": _halo,
    "ghosting": _ghosting,
    "thermal_loss": _thermal_loss,
    "texture_loss": _texture_loss,
    "oversaturation": _oversaturation,
    "noise": _noise,
    "blur": _blur,
    "blocking": _blocking,
    "stripes": _stripes,
    "colour_cast": _colour_cast,
    "contrast_loss": _contrast_loss,
    "ringing": _ringing,
}


@dataclass
class Effect:
    """What an applied artifact did: its name, strength, the fraction of the image it covers, how
    visible it is on this content, and (for :func:`dimension_maps`) where it is."""

    name: str
    strength: float
    coverage: float
    visibility: float = 1.0
    mask: torch.Tensor | None = field(default=None, repr=False, compare=False)


def apply_artifacts(
    fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, specs: Sequence[ArtifactSpec], *,
    focus_targets: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[Effect]]:
    """Inject ``specs`` in order into ``fused`` [C,H,W]. Returns (degraded [C',H,W], heatmap [1,H,W], effects).

    The heatmap is the pixel-wise maximum of mask x effective strength over the artifacts,
    where effective strength = strength x visibility (how much this content lets the artifact
    show at all; independent of strength, so labels stay monotone in it). A colour cast turns
    a grey fused image into colour (C' = 3). ``focus_targets`` ("targets" labels) labels a thermal
    loss only where it changes the image.
    """
    out = fused.float().clone()
    heat = torch.zeros(1, *fused.shape[-2:])
    effects = []
    for spec in specs:
        if spec.name not in _ARTIFACT_FNS:
            raise ValueError(f"unknown artifact {spec.name!r}; known: {', '.join(ARTIFACTS)}")
        if not 0.0 < spec.strength <= 1.0:
            raise ValueError(f"artifact strength must be in (0, 1], got {spec.strength}")
        if spec.whole and spec.name not in GLOBAL_OK:
            raise ValueError(f"artifact {spec.name!r} cannot cover the whole image; those that can: "
                             + ", ".join(sorted(GLOBAL_OK)))
        g = np.random.default_rng(spec.seed)
        extra = {"focus": True} if focus_targets and spec.name == "thermal_loss" else {}
        out, mask, visibility = _ARTIFACT_FNS[spec.name](out, ir.float(), vis.float(), float(spec.strength), g,
                                                         whole=spec.whole, **extra)
        out = out.clamp(0, 1)
        heat = torch.maximum(heat, mask * (spec.strength * visibility))
        effects.append(Effect(spec.name, float(spec.strength), float(mask.mean()), float(visibility), mask))
    return out, heat.clamp(0, 1), effects


def dimension_maps(effects: Iterable[Effect], size: tuple[int, int]) -> torch.Tensor:
    """Where each of Thermal, Texture, Artifacts and Sharpness loses points: [4,H,W] in 0..1.

    The per-pixel counterpart of :func:`scores_for`: the sum over artifacts of their weight on
    that dimension x mask x strength x visibility, clipped to 1. One type-agnostic heatmap says
    where something is wrong; these say which score it costs, a denser target for the model.
    """
    out = torch.zeros(4, *size)
    for e in effects:
        if e.mask is None:
            raise ValueError(f"effect {e.name!r} has no mask; dimension maps need the effects apply_artifacts returns")
        w = torch.tensor(ARTIFACT_WEIGHTS[e.name]).view(4, 1, 1)
        out += w * e.mask * (e.strength * e.visibility)
    return out.clamp(0, 1)


def _area_weight(coverage: float) -> float:
    """How much a region's size counts: a 30%+ region fully, a tiny one half."""
    return 0.5 + 0.5 * min(1.0, math.sqrt(coverage / 0.3))


def severity(effect: Effect) -> float:
    """Strength times visibility, discounted for small regions (see :func:`_area_weight`)."""
    return effect.strength * effect.visibility * _area_weight(effect.coverage)


def _detail(x: torch.Tensor) -> torch.Tensor:
    """Absolute high-pass of a luma [1,H,W]: the image minus its local mean over ~5 px at 256 px."""
    k = 2 * max(1, round(2 * _scale(*x.shape[-2:]))) + 1
    return (x - F.avg_pool2d(x.unsqueeze(0), k, stride=1, padding=k // 2, count_include_pad=False)[0]).abs()


def retention_deficits(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                       min_target_area: float = MIN_TARGET_AREA["retention"]) -> tuple[float, float]:
    """Thermal and Texture deficits (0..1) of a fusion for what it fails to keep of its sources.

    Fusion methods differ in how much of each source they keep: an average keeps half the IR
    contrast of hot targets and half the visible detail, a maximum all of the one and less of
    the other. A thermal-loss (texture-loss) artifact that leaves the same share is a real
    loss, so the clean fusion is charged the same way: (1 - share kept) x visibility x area,
    the form of :func:`severity` with strength = share lost. Hot targets are the top 10% of
    the IR luma where it exceeds the visible by over 0.1; visible-only detail is the top 20%
    of the visible high-pass where the IR's is under half of it. Hot targets count from
    ``min_target_area`` of the image (:data:`MIN_TARGET_AREA`), visible-only detail from 0.5%.
    Visibility uses the gap and the detail amplitude (references 0.15 as for thermal loss, and
    :data:`DETAIL_REFERENCE`).
    """
    fy, iy, vy = luma(fused.float()), luma(ir.float()), luma(vis.float())
    gap = iy - vy
    hot = (iy >= _quantile(iy, 0.9)) & (gap > 0.1)
    thermal = 0.0
    if hot.float().mean() >= min_target_area:
        share = float(((fy - vy) / gap)[hot].clamp(0, 1).mean())
        visibility = min(1.0, float(gap[hot].mean()) / 0.15) ** 0.5
        thermal = (1 - share) * visibility * _area_weight(float(hot.float().mean()))
    dv, di = _detail(vy), _detail(iy)
    only_vis = (dv >= _quantile(dv, 0.8)) & (di < 0.5 * dv)
    texture = 0.0
    if only_vis.float().mean() >= 0.005:
        amplitude = float(dv[only_vis].mean())
        share = min(1.0, float(_detail(fy)[only_vis].mean()) / max(amplitude, 1e-6))
        visibility = min(1.0, amplitude / DETAIL_REFERENCE) ** 0.5
        texture = (1 - share) * visibility * _area_weight(float(only_vis.float().mean()))
    return thermal, texture


def scores_for(effects: Iterable[Effect], base: Sequence[float] = (0.0, 0.0, 0.0, 0.0)) -> torch.Tensor:
    """Scores [5] on 1..5 in :data:`DIMENSIONS` order; monotone (non-increasing) in every strength.

    Each dimension's deficit is ``base`` (what the clean fusion already lacks, see
    :func:`retention_deficits`; zero for "relative" labels) plus the weighted sum of severities,
    clipped to 1; Overall's deficit is half the worst dimension's plus half their mean. Clean
    images score 5 under relative labels.
    """
    deficit = np.asarray(base, dtype=float).copy()
    for e in effects:
        deficit += np.asarray(ARTIFACT_WEIGHTS[e.name]) * severity(e)
    deficit = np.clip(deficit, 0.0, 1.0)
    overall = min(1.0, 0.5 * deficit.max() + 0.5 * deficit.mean())
    return torch.tensor([*(5.0 - 4.0 * deficit), 5.0 - 4.0 * overall], dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# sources: IR/visible pairs with clean fused images from several methods
# --------------------------------------------------------------------------------------------
@dataclass
class SourcePair:
    """One registered pair and its clean fused images, stored as uint8 [C,H,W] to save memory."""

    key: str
    ir: torch.Tensor
    vis: torch.Tensor
    fused: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Each clean fusion's retention deficits by (method, colour, label scheme), filled on first use: they
    #: depend on nothing else, and recomputing them took about 6% of a training step.
    deficits: dict[tuple[str, bool, str], tuple[float, float]] = field(default_factory=dict, repr=False, compare=False)

    def get(self, what: str) -> torch.Tensor:
        t = self.ir if what == "ir" else self.vis if what == "vis" else self.fused[what]
        return t.float() / 255.0


def _u8(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(0, 1).mul(255).round().to(torch.uint8)


def _fusion_models(methods: Sequence[str]) -> dict[str, torch.nn.Module]:
    from ..errors import ModelLoadError
    from ..hub import load_fusion_model
    from ..models import create_model

    models = {}
    for name in methods:
        if name not in FUSION_BASELINES:
            continue
        try:
            models[name] = load_fusion_model(name)
        except ModelLoadError:
            # No bundled ``light`` weights yet: an untrained light network (seeded) is still a distinct,
            # plausible fusion rule (about half of each base layer plus both detail layers).
            with torch.random.fork_rng():
                torch.manual_seed(0)
                models[name] = create_model(name).eval()
            log.info("no bundled weights for %s: using a seeded untrained network", name)
    return models


def load_sources(
    set_dirs: Sequence[str | Path],
    methods: Sequence[str] = FUSION_BASELINES + PUBLISHED_METHODS,
    *,
    size: int | None = None,
    stems: Iterable[str] | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
) -> list[SourcePair]:
    """Load every pair of each ``<set>/ir`` + ``<set>/vi`` folder with its clean fused images.

    Baselines in ``methods`` are computed here; published methods are read from
    ``<set>/fused/<Method>/<stem>.png`` when present (missing ones are skipped). With
    ``size`` everything is resized to ``size`` x ``size`` (fused at full size first). ``stems``
    keeps only those keys (``set/stem``). ``cache`` (a .pt file) skips the work next time.
    """
    from tqdm import tqdm

    from ..inference import fuse
    from ..io import find_pairs, load_image, load_pair, resize_to

    wanted = set(stems) if stems is not None else None
    if cache is not None and Path(cache).is_file():
        data = torch.load(cache, map_location="cpu", weights_only=True)
        if data.get("meta") == {"sets": [str(Path(d).resolve()) for d in set_dirs], "methods": list(methods),
                                "size": size}:
            out = [SourcePair(k, v["ir"], v["vis"], dict(v["fused"])) for k, v in data["pairs"].items()]
            return [p for p in out if wanted is None or p.key in wanted]
    models = _fusion_models(methods)
    pairs: list[SourcePair] = []
    for d in set_dirs:
        root = Path(d)
        listing = find_pairs(root / "ir", root / "vi")
        for stem, (ir_path, vis_path) in tqdm(listing, desc=f"sources {root.name}", disable=not progress):
            key = f"{root.name}/{stem}"
            if wanted is not None and cache is None and key not in wanted:
                continue
            ir, vis = load_pair(ir_path, vis_path, resize=True)
            hw = tuple(vis.shape[-2:])
            fused: dict[str, torch.Tensor] = {}
            for name in methods:
                if name in models:
                    fused[name] = fuse(models[name], ir[None], vis[None])[0]
                else:
                    p = root / "fused" / name / f"{stem}.png"
                    if p.is_file():
                        fused[name] = resize_to(load_image(p, grey=True), hw)
            if size:
                ir, vis = resize_to(ir, (size, size)), resize_to(vis, (size, size))
                fused = {k: resize_to(v, (size, size)) for k, v in fused.items()}
            pairs.append(SourcePair(key, _u8(ir), _u8(vis), {k: _u8(v) for k, v in fused.items()}))
    if cache is not None:
        import io as _io

        from ..io import atomic_write_bytes

        buf = _io.BytesIO()
        meta = {"sets": [str(Path(d).resolve()) for d in set_dirs], "methods": list(methods), "size": size}
        torch.save({"meta": meta, "pairs": {p.key: {"ir": p.ir, "vis": p.vis, "fused": p.fused} for p in pairs}}, buf)
        atomic_write_bytes(cache, buf.getvalue())
    return [p for p in pairs if wanted is None or p.key in wanted]


def stable_fraction(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by (seed, key): splits by it never depend on which other keys exist."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_test_pair(key: str, test_fraction: float = 0.15, seed: int = 0) -> bool:
    """Stable split by source pair (see :func:`stable_fraction`)."""
    return stable_fraction(key, seed) < test_fraction


def split_pairs(pairs: Sequence[SourcePair], test_fraction: float = 0.15, seed: int = 0):
    """(train, test) lists of source pairs; no pair is in both."""
    train = [p for p in pairs if not is_test_pair(p.key, test_fraction, seed)]
    test = [p for p in pairs if is_test_pair(p.key, test_fraction, seed)]
    return train, test


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticConfig:
    clean_fraction: float = 0.15
    #: Probabilities of 1, 2, 3 ... artifacts in a degraded sample.
    count_probs: tuple[float, ...] = (0.6, 0.3, 0.1)
    strength_range: tuple[float, float] = (0.1, 1.0)
    artifacts: tuple[str, ...] = ARTIFACTS
    #: Probability that a fused image is shown in colour (visible chroma) rather than grey.
    colour_prob: float = 0.6
    flip: bool = False
    #: Fraction of samples that carry one whole-image artifact from ``whole_artifacts`` at a strength in
    #: ``whole_strength``. With the defaults these are the visible image alone, the IR image alone and a
    #: blurred fusion: images that look clean locally but are no fusion, which random regions rarely make.
    whole_fraction: float = 0.0
    whole_artifacts: tuple[str, ...] = ("thermal_loss", "texture_loss", "blur")
    whole_strength: tuple[float, float] = (0.5, 1.0)
    #: One of :data:`LABELS`.
    labels: str = "relative"
    #: Sample ``2k + 1`` shows sample ``2k``'s source pair, method, colour and flip with its own artifacts, so a
    #: batch holds pairs whose label differences come from the artifacts alone (``loss.pair_ranking``).
    paired: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SyntheticConfig:
        d = dict(d or {})
        for k in ("count_probs", "strength_range", "artifacts", "whole_artifacts", "whole_strength"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _clean_fused(pair: SourcePair, method: str, colour: bool) -> torch.Tensor:
    f = pair.get(method)
    vis = pair.get("vis")
    if colour and vis.shape[0] == 3:
        return recolour(luma(f).unsqueeze(0), vis.unsqueeze(0))[0]
    return luma(f) if f.shape[0] == 3 and not colour else f


def make_sample(
    pair: SourcePair, method: str, specs: Sequence[ArtifactSpec], *, colour: bool = True, flip: bool = False,
    labels: str = "relative",
) -> dict[str, Any]:
    """One labelled triple: fused (degraded by ``specs``), ir, vis, heatmap [1,H,W], scores [5] on 1..5.
    ``labels`` is one of :data:`LABELS`."""
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(LABELS)}; got {labels!r}")
    ir, vis = pair.get("ir"), pair.get("vis")
    clean = _clean_fused(pair, method, colour)
    fused, heat, effects = apply_artifacts(clean, ir, vis, specs, focus_targets=labels == "targets")
    base = (0.0, 0.0, 0.0, 0.0)
    if labels in MIN_TARGET_AREA:
        if (method, colour, labels) not in pair.deficits:
            pair.deficits[method, colour, labels] = retention_deficits(clean, ir, vis, MIN_TARGET_AREA[labels])
        base = (*pair.deficits[method, colour, labels], 0.0, 0.0)
    sample = {
        "fused": fused,
        "ir": ir,
        "vis": vis,
        "heatmap": heat,
        "dimension_maps": dimension_maps(effects, tuple(heat.shape[-2:])),
        "scores": scores_for(effects, base),
        "key": pair.key,
        "method": method,
        "artifacts": [(e.name, e.strength, e.coverage, e.visibility) for e in effects],
    }
    if flip:
        for k in ("fused", "ir", "vis", "heatmap", "dimension_maps"):
            sample[k] = sample[k].flip(-1)
    return sample


class SyntheticRewardData:
    """An endless, deterministic stream of labelled samples over a list of source pairs.

    ``sample(i)`` depends only on (``seed``, ``i``) and the sources; ``len`` is nominal
    (``length``), for evaluation sets of a fixed size.
    """

    def __init__(self, pairs: Sequence[SourcePair], seed: int = 0, config: SyntheticConfig | None = None,
                 length: int | None = None) -> None:
        if not pairs:
            raise ValueError("no source pairs to generate samples from")
        self.pairs = list(pairs)
        self.seed = int(seed)
        self.config = config or SyntheticConfig()
        self.length = length if length is not None else 8 * len(self.pairs)

    def __len__(self) -> int:
        return self.length

    def specs(self, index: int) -> tuple[SourcePair, str, list[ArtifactSpec], bool, bool]:
        cfg = self.config
        g = np.random.default_rng([self.seed, int(index)])
        pair, method, colour, flip = self._source(g)
        if cfg.paired and index % 2:
            pair, method, colour, flip = self._source(np.random.default_rng([self.seed, int(index) - 1]))
        specs: list[ArtifactSpec] = []
        if cfg.whole_fraction > 0 and g.random() < cfg.whole_fraction:  # drawn only when enabled: old streams stay
            name = cfg.whole_artifacts[int(g.integers(len(cfg.whole_artifacts)))]
            specs.append(ArtifactSpec(name, float(g.uniform(*cfg.whole_strength)), int(g.integers(2**31)), whole=True))
        elif g.random() >= cfg.clean_fraction:
            probs = np.asarray(cfg.count_probs, dtype=float)
            n = 1 + int(g.choice(len(probs), p=probs / probs.sum()))
            names = g.choice(len(cfg.artifacts), size=n, replace=False)
            lo, hi = cfg.strength_range
            for k in names:
                specs.append(ArtifactSpec(cfg.artifacts[int(k)], float(g.uniform(lo, hi)), int(g.integers(2**31))))
        return pair, method, specs, colour, flip

    def _source(self, g: np.random.Generator) -> tuple[SourcePair, str, bool, bool]:
        pair = self.pairs[int(g.integers(len(self.pairs)))]
        method = sorted(pair.fused)[int(g.integers(len(pair.fused)))]
        colour = bool(g.random() < self.config.colour_prob)
        flip = bool(self.config.flip and g.random() < 0.5)
        return pair, method, colour, flip

    def sample(self, index: int) -> dict[str, Any]:
        pair, method, specs, colour, flip = self.specs(index)
        s = make_sample(pair, method, specs, colour=colour, flip=flip, labels=self.config.labels)
        s["index"] = int(index)
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.sample(index)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples of one size into a batch: fused/vis as 3 channels, ir as 1; ``dimension_maps``
    only when every sample has them (synthetic ones do, human ratings do not)."""
    from ..reward.model import promote_rgb

    batch = {
        "fused": torch.cat([promote_rgb(s["fused"][None]) for s in samples]),
        "ir": torch.stack([luma(s["ir"]) for s in samples]),
        "vis": torch.cat([promote_rgb(s["vis"][None]) for s in samples]),
        "heatmap": torch.stack([s["heatmap"] for s in samples]),
        "scores": torch.stack([s["scores"] for s in samples]),
    }
    if all("dimension_maps" in s for s in samples):
        batch["dimension_maps"] = torch.stack([s["dimension_maps"] for s in samples])
    return batch


def ladder(
    pair: SourcePair, method: str, name: str, seed: int, strengths: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    colour: bool = True, labels: str = "relative",
) -> list[dict[str, Any]]:
    """The clean image followed by one artifact at rising strengths, same mask and parameters."""
    out = [make_sample(pair, method, [], colour=colour, labels=labels)]
    out += [make_sample(pair, method, [ArtifactSpec(name, s, seed)], colour=colour, labels=labels)
            for s in strengths]
    return out
