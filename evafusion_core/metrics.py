"""Objective infrared-visible image-fusion metrics, in two named conventions.

Published IVIF tables disagree on almost every metric setting (MI base, SSIM constants and
sum-vs-mean, PSNR peak, ...), so a number is only meaningful together with its convention.
This module reproduces the two conventions that ``METRICS.md`` (``../shared/docs/`` from the
repository root) defines:

``tang`` (default)
    The MATLAB toolkit of the SeAFusion / DCEvo / EVAFusion family (Linfeng-Tang's
    ``analysis_Reference.m``), including its quirks, so that our numbers sit in the same
    columns as the published tables:

    - EN in bits; SD population; SF = sqrt(RF^2 + CF^2) with means over the difference arrays;
    - AG from MATLAB ``gradient`` (central inside, one-sided at the border), divided by (M-1)(N-1);
    - MI in bits, summed over sources, with the joint-histogram quirk of ``Hab.m`` (it adds 1 to
      uint8 arrays, so 255+1 saturates and grey levels 254 and 255 merge in the *joint* histogram,
      not in the marginals);
    - CC = mean over sources of Pearson r; SCD = r(F-B, A) + r(F-A, B);
    - VIF = 4-scale pixel VIF (``vifp_mscale``, sigma_n^2 = 2) summed over sources;
    - Qabf (Xydeas-Petrovic, Sobel with zero padding, weights g^1);
    - Nabf (Shreyamsha Kumar's modified artefact measure, Sobel/8 on a mirror-extended image);
    - SSIM = mean over sources of MATLAB ``ssim`` on 0..255 doubles with its default
      DynamicRange 1 (C1 = 1e-4, C2 = 9e-4; Gaussian sigma 1.5, 11x11, replicate padding);
    - MSE on 0..1 data, mean over sources; PSNR = 20 log10(255 / sqrt(MSE on 0..1)).

``cdd``
    The Python ``Evaluator`` of the CDDFuse / EMMA / DDFM family:

    - MI in nats, no joint-histogram quirk (sklearn ``mutual_info_score`` on the grey values);
    - SSIM = skimage ``structural_similarity`` (7x7 uniform window, sample covariance,
      data_range 2 as old skimage used for float input), *summed* over sources;
    - AG: the same gradient sum divided by M*N;
    - MSE on the 0..255 scale, mean over sources (that Evaluator's ``MSE``), and
      PSNR = 10 log10(max(F)^2 / that MSE);
    - every other metric as ``tang`` (CC and SCD are the same formulas in both toolkits; Nabf is
      not in the CDD toolkit and is given with the ``tang`` definition so tables keep their columns).

    The reference vectors (``metric_vectors.json``) have no cdd CC, Nabf or MSE. CC and Nabf
    are convention-independent here. For MSE we follow the CDD toolkit (0..255) rather than
    METRICS.md's blanket "other metrics as tang" (0..1), because the CDD Evaluator computes it
    on 0..255 and its PSNR is built on that same 0..255 MSE; a cdd table should be
    self-consistent and comparable with CDDFuse-family numbers.

Every metric is computed on grey 8-bit-valued images on the 0..255 scale: RGB is reduced with
MATLAB ``rgb2gray`` weights and rounded half up (:func:`evafusion_core.colour.grey_u8`), and grey
input is rounded and clipped to 0..255 the same way, because the reference toolkits score the saved
8-bit files. All filtering is separable (scipy.ndimage) and histograms use ``np.bincount``, so the
full set for a 640x480 image takes a fraction of a second on a CPU.

Degenerate inputs (a constant image) make correlation-type metrics (CC, SCD, Qabf) undefined; they
come back as ``nan``, as in the toolkits. PSNR of an exact copy is ``inf``. VIF of a source with no
variance at any scale counts as 1.0, as the CDD toolkit does (the MATLAB code gives NaN there). VIF
uses its 4 scales only on images at least 41 pixels a side; smaller ones use the scales that fit (as
MATLAB's empty 'valid' sums do), and below 17 pixels, where none fits, VIF is ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from scipy import ndimage

from .colour import grey_u8

__all__ = ["CONVENTIONS", "HIGHER_IS_BETTER", "METRICS", "MIN_SIZE", "compute_metrics"]

# Column order of the shared reference tables (metric_vectors.json, peer_metrics.csv).
METRICS: tuple[str, ...] = (
    "EN",
    "SD",
    "SF",
    "AG",
    "MI",
    "CC",
    "SCD",
    "VIF",
    "Qabf",
    "Nabf",
    "SSIM",
    "PSNR",
    "MSE",
)

CONVENTIONS: tuple[str, ...] = ("tang", "cdd")

# Direction of "better" for ranking and reward shaping: Nabf measures artefacts and MSE error.
HIGHER_IS_BETTER: dict[str, bool] = {name: name not in ("Nabf", "MSE") for name in METRICS}

# Smallest image side accepted. The cdd SSIM window is 7x7 and skimage refuses smaller images;
# one global floor keeps every metric defined for every accepted input.
MIN_SIZE = 7

_LOG2_E = 1.0 / math.log(2.0)


# --------------------------------------------------------------------------------------------
# Small building blocks
# --------------------------------------------------------------------------------------------


def _sep(x: np.ndarray, k_rows: np.ndarray, k_cols: np.ndarray, mode: str) -> np.ndarray:
    """Same-size separable correlation: ``k_rows`` runs down the columns (axis 0), ``k_cols`` along rows."""
    y = ndimage.correlate1d(x, k_rows, axis=0, mode=mode, cval=0.0)
    return ndimage.correlate1d(y, k_cols, axis=1, mode=mode, cval=0.0)


def _valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(k'*k, x, 'valid')`` for a symmetric odd 1-D kernel, done separably.

    An image smaller than the kernel gives an empty array, as MATLAB does (its sums are then 0).
    """
    n = k.size
    r = n // 2
    if x.shape[0] < n or x.shape[1] < n:
        return np.empty((max(x.shape[0] - n + 1, 0), max(x.shape[1] - n + 1, 0)))
    y = ndimage.correlate1d(x, k, axis=0, mode="nearest")[r : x.shape[0] - r]
    return ndimage.correlate1d(y, k, axis=1, mode="nearest")[:, r : x.shape[1] - r]


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian whose outer product is MATLAB ``fspecial('gaussian', size, sigma)``.

    fspecial zeroes entries below eps*max before normalising; none of the sizes used here has
    such entries, so the 2-D kernel is exactly separable.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    e = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return e / e.sum()


_SMOOTH = np.array([1.0, 2.0, 1.0])
_DIFF = np.array([-1.0, 0.0, 1.0])


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (MATLAB ``corr2``); nan where either image is constant."""
    xd = x - x.mean()
    yd = y - y.mean()
    den = math.sqrt(float(np.sum(xd * xd)) * float(np.sum(yd * yd)))
    return float(np.sum(xd * yd)) / den if den > 0 else float("nan")


def _entropy_of_counts(counts: np.ndarray, total: int) -> float:
    """Shannon entropy in bits of a histogram given as counts."""
    p = counts[counts > 0] / total
    return float(-np.sum(p * np.log2(p)))


# --------------------------------------------------------------------------------------------
# Per-image context: grey images plus lazily shared intermediates
# --------------------------------------------------------------------------------------------


class _Ctx:
    """The three grey images and intermediates shared between metrics (one image triple)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, f: np.ndarray, convention: str) -> None:
        self.a, self.b, self.f = a, b, f
        self.convention = convention
        self._cache: dict[str, object] = {}

    def hist(self, name: str) -> np.ndarray:
        """256-bin histogram (counts) of image ``name`` ('a', 'b' or 'f')."""
        key = "hist_" + name
        if key not in self._cache:
            img = getattr(self, name)
            self._cache[key] = np.bincount(img.astype(np.intp).ravel(), minlength=256)
        return self._cache[key]  # type: ignore[return-value]

    def gradient_sum(self) -> float:
        """Sum of sqrt((Gx^2 + Gy^2)/2) with MATLAB ``gradient`` derivatives (shared by AG variants)."""
        if "grad" not in self._cache:
            gy, gx = np.gradient(self.f)
            self._cache["grad"] = float(np.sum(np.sqrt((gx * gx + gy * gy) / 2.0)))
        return self._cache["grad"]  # type: ignore[return-value]

    def mse255(self) -> float:
        """Mean over sources of mean((F - X)^2) on the 0..255 scale."""
        if "mse" not in self._cache:
            da = self.f - self.a
            db = self.f - self.b
            self._cache["mse"] = 0.5 * (float(np.mean(da * da)) + float(np.mean(db * db)))
        return self._cache["mse"]  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# No-reference metrics (F only)
# --------------------------------------------------------------------------------------------


def _en(c: _Ctx) -> float:
    """Entropy (bits) of the 256-bin histogram of F; all toolkits agree."""
    return _entropy_of_counts(c.hist("f"), c.f.size)


def _sd(c: _Ctx) -> float:
    """Population standard deviation of F (0..255 scale)."""
    return float(np.std(c.f))


def _sf(c: _Ctx) -> float:
    """Spatial frequency: sqrt(mean of squared row differences + mean of squared column differences)."""
    f = c.f
    dh = f[:, 1:] - f[:, :-1]
    dv = f[1:, :] - f[:-1, :]
    return math.sqrt(float(np.mean(dh * dh)) + float(np.mean(dv * dv)))


def _ag(c: _Ctx) -> float:
    """Average gradient. tang divides by (M-1)(N-1) as the MATLAB code does; cdd by M*N."""
    m, n = c.f.shape
    den = m * n if c.convention == "cdd" else (m - 1) * (n - 1)
    return c.gradient_sum() / den


# --------------------------------------------------------------------------------------------
# Information and correlation metrics
# --------------------------------------------------------------------------------------------


def _mi_one(c: _Ctx, src: str, quirk: bool) -> float:
    """MI(F, X) in bits from 256-bin marginals and the 256x256 joint histogram.

    With ``quirk`` the joint histogram is built on min(v + 1, 255) of both images, i.e. levels
    254 and 255 merged, because that is what the TANG toolkit's uint8 ``Hab.m`` does; the
    marginal entropies are left exact, as in the toolkit.
    """
    f = c.f.astype(np.intp).ravel()
    x = getattr(c, src).astype(np.intp).ravel()
    if quirk:
        f = np.minimum(f, 254)
        x = np.minimum(x, 254)
    joint = np.bincount(f * 256 + x, minlength=256 * 256)
    n = c.f.size
    return (
        _entropy_of_counts(c.hist("f"), n) + _entropy_of_counts(c.hist(src), n) - _entropy_of_counts(joint, n)
    )


def _mi(c: _Ctx) -> float:
    """MI(F,A) + MI(F,B): bits with the joint-histogram quirk (tang) or exact nats (cdd)."""
    if c.convention == "cdd":
        return (_mi_one(c, "a", False) + _mi_one(c, "b", False)) / _LOG2_E
    return _mi_one(c, "a", True) + _mi_one(c, "b", True)


def _cc(c: _Ctx) -> float:
    """Mean over sources of the Pearson correlation r(X, F)."""
    return 0.5 * (_pearson(c.a, c.f) + _pearson(c.b, c.f))


def _scd(c: _Ctx) -> float:
    """Sum of the correlations of differences (Aslantas & Bendes): r(F-B, A) + r(F-A, B)."""
    return _pearson(c.f - c.b, c.a) + _pearson(c.f - c.a, c.b)


# --------------------------------------------------------------------------------------------
# VIF (multi-scale pixel-domain, Sheikh & Bovik ``vifp_mscale``)
# --------------------------------------------------------------------------------------------

_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10


def _vif(c: _Ctx) -> float:
    """VIF(A->F) + VIF(B->F); F's pyramid and local statistics are shared by both sources."""
    refs = [c.a, c.b]
    dist = c.f
    num = [0.0, 0.0]
    den = [0.0, 0.0]
    used_scale = False
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        k = _gauss1d(size, size / 5.0)
        if scale > 1:
            refs = [_valid(r, k)[::2, ::2] for r in refs]
            dist = _valid(dist, k)[::2, ::2]
        mu2 = _valid(dist, k)
        if mu2.size == 0:  # image too small for this scale: MATLAB sums over an empty array
            continue
        used_scale = True
        s2 = _valid(dist * dist, k) - mu2 * mu2
        s2[s2 < 0] = 0.0
        for i, ref in enumerate(refs):
            mu1 = _valid(ref, k)
            s1 = _valid(ref * ref, k) - mu1 * mu1
            s12 = _valid(ref * dist, k) - mu1 * mu2
            s1[s1 < 0] = 0.0
            g = s12 / (s1 + _VIF_EPS)
            sv = s2 - g * s12
            low1 = s1 < _VIF_EPS
            g[low1] = 0.0
            sv[low1] = s2[low1]
            s1[low1] = 0.0
            low2 = s2 < _VIF_EPS
            g[low2] = 0.0
            sv[low2] = 0.0
            neg = g < 0
            sv[neg] = s2[neg]
            g[neg] = 0.0
            sv[sv <= _VIF_EPS] = _VIF_EPS
            num[i] += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + _VIF_SIGMA_NSQ))))
            den[i] += float(np.sum(np.log10(1.0 + s1 / _VIF_SIGMA_NSQ)))
    if not used_scale:  # smaller than the 17x17 first-scale window: no statistics at all
        return float("nan")
    total = 0.0
    for nu, de in zip(num, den, strict=True):
        total += nu / de if de > 0 else 1.0  # a source without variance: 1.0, the CDD toolkit's rule
    return total


# --------------------------------------------------------------------------------------------
# Edge-based metrics: Qabf and Nabf
# --------------------------------------------------------------------------------------------


def _qabf_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength and orientation as in the toolkits' Qabf: zero padding, atan(Sy/Sx), pi/2 at Sx=0.

    conv2 flips the kernels, which negates both Sx and Sy; neither g nor atan(Sy/Sx) changes, so
    plain correlation is used.
    """
    sx = _sep(x, _SMOOTH, _DIFF, "constant")
    sy = _sep(x, -_DIFF, _SMOOTH, "constant")
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(zero, math.pi / 2, np.arctan(sy / np.where(zero, 1.0, sx)))
    return g, a


def _qabf_q(ga: np.ndarray, aa: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    """Edge preservation Q_XF = Qg * Qa with the Xydeas-Petrovic sigmoid constants."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gr = np.where(ga > gf, gf / ga, np.where(ga == gf, gf, ga / gf))  # the toolkit's tie quirk
    ar = 1.0 - np.abs(aa - af) / (math.pi / 2)
    qg = 0.9994 / (1.0 + np.exp(-15.0 * (gr - 0.5)))
    qa = 0.9879 / (1.0 + np.exp(-22.0 * (ar - 0.8)))
    return qg * qa


def _qabf(c: _Ctx) -> float:
    """Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB) (weights g^L with L = 1)."""
    ga, aa = _qabf_edges(c.a)
    gb, ab = _qabf_edges(c.b)
    gf, af = _qabf_edges(c.f)
    num = float(np.sum(_qabf_q(ga, aa, gf, af) * ga + _qabf_q(gb, ab, gf, af) * gb))
    den = float(np.sum(ga + gb))
    return num / den if den > 0 else float("nan")


def _nabf_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel/8 strength and orientation as in Shreyamsha Kumar's code.

    The image is extended by one pixel with its second row/column (``per_extn_im_fn``, scipy's
    'mirror' mode); ``gv`` is the horizontal derivative, ``gh`` the vertical one; the orientation
    is atan(gv/gh), 0 where both vanish and +-pi/2 where only gh does (MATLAB's atan(+-Inf)).
    """
    gv = _sep(x, _SMOOTH, _DIFF, "mirror") / 8.0
    gh = _sep(x, _DIFF, _SMOOTH, "mirror") / 8.0
    g = np.sqrt(gh * gh + gv * gv)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.arctan(gv / gh)
    a[(gv == 0) & (gh == 0)] = 0.0
    return g, a


def _nabf_q(gx: np.ndarray, ax: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    """Petrovic edge preservation with Q = sqrt(Qg * Qa) and the Nabf constants."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gr = np.where((gx == 0) | (gf == 0), 0.0, np.where(gx > gf, gf / gx, gx / gf))
    ar = np.abs(np.abs(ax - af) - math.pi / 2) * (2.0 / math.pi)
    qg = 0.9999 / (1.0 + np.exp(-19.0 * (gr - 0.5)))
    qa = 0.9995 / (1.0 + np.exp(-22.0 * (ar - 0.5)))
    return np.sqrt(qg * qa)


def _nabf(c: _Ctx) -> float:
    """Modified artefact measure: loss of edge preservation where F has stronger edges than A and B."""
    ga, aa = _nabf_edges(c.a)
    gb, ab = _nabf_edges(c.b)
    gf, af = _nabf_edges(c.f)
    wa = np.where(ga >= 2.0, ga**1.5, 0.001)
    wb = np.where(gb >= 2.0, gb**1.5, 0.001)
    art = (gf > ga) & (gf > gb)
    qa = _nabf_q(ga[art], aa[art], gf[art], af[art])
    qb = _nabf_q(gb[art], ab[art], gf[art], af[art])
    num = float(np.sum((1.0 - qa) * wa[art] + (1.0 - qb) * wb[art]))
    return num / float(np.sum(wa + wb))


# --------------------------------------------------------------------------------------------
# SSIM, PSNR, MSE
# --------------------------------------------------------------------------------------------

_SSIM_TANG_K = _gauss1d(11, 1.5)


def _ssim_tang(c: _Ctx) -> float:
    """Mean over sources of MATLAB ``ssim`` defaults on 0..255 doubles (C1 = 1e-4, C2 = 9e-4)."""
    c1, c2 = 1e-4, 9e-4

    def filt(x: np.ndarray) -> np.ndarray:
        return _sep(x, _SSIM_TANG_K, _SSIM_TANG_K, "nearest")

    f = c.f
    mf = filt(f)
    mf2 = mf * mf
    vf = filt(f * f) - mf2
    total = 0.0
    for x in (c.a, c.b):
        mx = filt(x)
        vx = filt(x * x) - mx * mx
        cov = filt(x * f) - mx * mf
        ssim_map = ((2 * mx * mf + c1) * (2 * cov + c2)) / ((mx * mx + mf2 + c1) * (vx + vf + c2))
        total += float(np.mean(ssim_map))
    return 0.5 * total


def _ssim_cdd(c: _Ctx) -> float:
    """Sum over sources of skimage-style SSIM: 7x7 uniform window, sample covariance, data_range 2.

    Only the interior (3 pixels from each border) is averaged, so the filter's padding mode
    does not matter.
    """
    win = 7
    pad = (win - 1) // 2
    cov_norm = win * win / (win * win - 1.0)
    c1 = (0.01 * 2.0) ** 2
    c2 = (0.03 * 2.0) ** 2

    def filt(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=win, mode="reflect")

    f = c.f
    uf = filt(f)
    uff = filt(f * f)
    vf = cov_norm * (uff - uf * uf)
    total = 0.0
    for x in (c.a, c.b):
        ux = filt(x)
        vx = cov_norm * (filt(x * x) - ux * ux)
        vxf = cov_norm * (filt(x * f) - ux * uf)
        s = ((2 * ux * uf + c1) * (2 * vxf + c2)) / ((ux * ux + uf * uf + c1) * (vx + vf + c2))
        total += float(np.mean(s[pad : s.shape[0] - pad, pad : s.shape[1] - pad]))
    return total


def _ssim(c: _Ctx) -> float:
    """SSIM in the context's convention (the two differ in window, constants and sum vs mean)."""
    return _ssim_cdd(c) if c.convention == "cdd" else _ssim_tang(c)


def _mse(c: _Ctx) -> float:
    """Mean over sources of the mean squared error: on 0..1 data (tang) or 0..255 data (cdd)."""
    m = c.mse255()
    return m if c.convention == "cdd" else m / (255.0 * 255.0)


def _psnr(c: _Ctx) -> float:
    """tang: 20 log10(255 / sqrt(MSE on 0..1)); cdd: 10 log10(max(F)^2 / MSE on 0..255)."""
    m = c.mse255()
    if m == 0:
        return float("inf")
    if c.convention == "cdd":
        peak = float(np.max(c.f))
        return 10.0 * math.log10(peak * peak / m) if peak > 0 else float("-inf")
    return 20.0 * math.log10(255.0 / math.sqrt(m / (255.0 * 255.0)))


_FUNCS: dict[str, Callable[[_Ctx], float]] = {
    "EN": _en,
    "SD": _sd,
    "SF": _sf,
    "AG": _ag,
    "MI": _mi,
    "CC": _cc,
    "SCD": _scd,
    "VIF": _vif,
    "Qabf": _qabf,
    "Nabf": _nabf,
    "SSIM": _ssim,
    "PSNR": _psnr,
    "MSE": _mse,
}
assert tuple(_FUNCS) == METRICS

_BY_LOWER = {name.lower(): name for name in METRICS}


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _prepare(img: object, role: str) -> np.ndarray:
    """Validate one input and reduce it to the grey 0..255 integer-valued float64 image the metrics use."""
    a = np.asarray(img)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{role} must be a numeric array on the 0..255 scale, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] not in (1, 3):
        raise ValueError(f"{role} must be [H,W] or [H,W,3] (channels last), got shape {a.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{role} must be [H,W] or [H,W,3] (channels last), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError(f"{role} contains NaN or infinite values")
    return grey_u8(a)


def _resolve_names(names: Iterable[str] | None) -> list[str]:
    """Canonical metric names (case-insensitive match), in the requested order without repeats."""
    if names is None:
        return list(METRICS)
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        canon = _BY_LOWER.get(str(n).lower())
        if canon is None:
            raise ValueError(f"unknown metric {n!r}; valid names: {', '.join(METRICS)}")
        if canon not in out:
            out.append(canon)
    return out


def compute_metrics(
    ir: np.ndarray,
    vis: np.ndarray,
    fused: np.ndarray,
    convention: str = "tang",
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Score one fused image against its infrared and visible sources.

    Args:
        ir, vis, fused: arrays on the 0..255 scale, [H,W] or [H,W,3] RGB, all with the same H and W.
            Each is reduced to grey with MATLAB ``rgb2gray`` weights and rounded to whole grey levels
            (grey input is rounded and clipped to 0..255), because the reference toolkits score the
            saved 8-bit files. A 0..1 image must be multiplied by 255 first: several metrics
            (SD, SF, AG, VIF, PSNR) depend on the scale.
        convention: ``"tang"`` (default, MATLAB toolkit of the SeAFusion/DCEvo family) or ``"cdd"``
            (CDDFuse-family Python Evaluator); see the module docstring for what differs.
        names: metrics to compute (case-insensitive); ``None`` means all of :data:`METRICS`.

    Returns:
        ``{name: value}`` in the requested order (``METRICS`` order by default), as Python floats.

    Raises:
        ValueError: on an unknown convention or metric name (the message lists the valid ones), on
            inputs whose H,W differ (the message names the shapes), on NaN/inf values, on a wrong
            number of dimensions or channels, or on images smaller than ``MIN_SIZE`` pixels a side.
    """
    conv = str(convention).lower()
    if conv not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; valid conventions: {', '.join(CONVENTIONS)}")
    wanted = _resolve_names(names)
    a = _prepare(ir, "ir")
    b = _prepare(vis, "vis")
    f = _prepare(fused, "fused")
    if not (a.shape == b.shape == f.shape):
        raise ValueError(
            "ir, vis and fused must have the same height and width; got shapes "
            f"ir {np.shape(ir)}, vis {np.shape(vis)}, fused {np.shape(fused)}"
        )
    if min(f.shape) < MIN_SIZE:
        raise ValueError(
            f"images must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {f.shape[0]}x{f.shape[1]}"
        )
    ctx = _Ctx(a, b, f, conv)
    return {name: float(_FUNCS[name](ctx)) for name in wanted}
