"""Colour conversion: the one place where RGB, YCbCr and grey meet.

Fusion runs on the luma (Y) channel of BT.601 YCbCr, the convention of the
SeAFusion/CDDFuse/DCEvo family, and colour is put back from the visible image's
chroma. Metrics use MATLAB's ``rgb2gray`` weights, rounded, so that numbers match
the published toolkits (METRICS.md).
"""

from __future__ import annotations

import numpy as np
import torch

# MATLAB rgb2gray weights (full precision, as in the reference vectors).
MATLAB_GREY = (0.298936021293775, 0.587043074451121, 0.114020904255103)

# BT.601 full-range (JPEG / PIL "YCbCr") on a 0..1 scale.
_KR, _KG, _KB = 0.299, 0.587, 0.114


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] RGB in 0..1 -> [..., 3, H, W] YCbCr (BT.601 full range, chroma centred on 0.5)."""
    r, g, b = rgb.unbind(-3)
    y = _KR * r + _KG * g + _KB * b
    cb = (b - y) / (2 * (1 - _KB)) + 0.5
    cr = (r - y) / (2 * (1 - _KR)) + 0.5
    return torch.stack((y, cb, cr), dim=-3)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`; the result is clamped to 0..1."""
    y, cb, cr = ycc.unbind(-3)
    cb = cb - 0.5
    cr = cr - 0.5
    r = y + 2 * (1 - _KR) * cr
    b = y + 2 * (1 - _KB) * cb
    g = (y - _KR * r - _KB * b) / _KG
    return torch.stack((r, g, b), dim=-3).clamp(0.0, 1.0)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] -> [..., 1, H, W] BT.601 luma; a 1-channel input passes through."""
    if rgb.shape[-3] == 1:
        return rgb
    r, g, b = rgb.unbind(-3)
    return (_KR * r + _KG * g + _KB * b).unsqueeze(-3)


def recolour(fused_y: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Put the visible image's chroma back under a fused luma.

    ``fused_y`` is [B,1,H,W]; ``vis`` is [B,C,H,W] with C 1 or 3. A grey visible
    image gives a grey (1-channel) result, so a grey pair never gains false colour.
    """
    if vis.shape[1] == 1:
        return fused_y.clamp(0.0, 1.0)
    ycc = rgb_to_ycbcr(vis)
    return ycbcr_to_rgb(torch.cat((fused_y, ycc[:, 1:]), dim=1))


def grey_u8(img: np.ndarray) -> np.ndarray:
    """An image on the 0..255 scale ([H,W] or [H,W,3]) -> uint8-valued float64 grey, MATLAB style.

    RGB is reduced with ``rgb2gray`` weights and rounded half up, as the reference
    toolkit does; grey input is rounded and clipped.
    """
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3:
        if a.shape[2] == 1:
            a = a[..., 0]
        else:
            a = a[..., 0] * MATLAB_GREY[0] + a[..., 1] * MATLAB_GREY[1] + a[..., 2] * MATLAB_GREY[2]
    return np.clip(np.floor(a + 0.5), 0, 255)
