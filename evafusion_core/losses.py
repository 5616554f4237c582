"""Unsupervised fusion losses (no ground-truth fused image exists for IR/visible pairs).

The recipe of the SeAFusion/CDDFuse/DCEvo family (DCEVO.md): follow the brighter
source's intensity, the stronger source's gradients, and the structure of both
(SSIM). Used to train ``light`` and, in fine-tuning, as the fidelity term that keeps
a reward-driven network honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of [B,1,H,W] with replicate padding (the L1 form the published loss uses)."""
    k = torch.stack((_SOBEL_X, _SOBEL_X.t())).unsqueeze(1).to(x)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return g.abs().sum(1, keepdim=True)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM (Wang 2004, Gaussian window, constants for 0..1 data) of [B,1,H,W] tensors, per sample."""
    g = _gaussian(window).to(a)
    kx, ky = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(F.conv2d(x, kx), ky)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a**2
    vb = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)


@dataclass
class FusionLossWeights:
    """Weights of the fusion loss terms; the defaults are those of the shipped `light` (chosen on the training sets)."""

    intensity: float = 1.0
    gradient: float = 10.0
    ssim: float = 10.0
    #: Intensity target: 0 follows the brighter source everywhere (the published recipe); 1 follows it only
    #: on IR-salient pixels (hot targets) and the mean of the sources elsewhere, which keeps more of both.
    salient_target: float = 0.0
    #: Pull towards warm targets: how much darker the fusion's local mean is than the IR image's on IR-salient
    #: pixels over 0.1 warmer than the visible image. The other terms barely ask for them (on large frames
    #: they even prefer a fusion that drops them; docs/RESULTS.md, twenty-first session).
    warm_target: float = 0.0


def ir_saliency(ir: torch.Tensor) -> torch.Tensor:
    """Soft mask [B,1,H,W] of pixels hotter than their image: 0.5 at one standard deviation above the mean."""
    mu = ir.mean(dim=(-2, -1), keepdim=True)
    sd = ir.std(dim=(-2, -1), keepdim=True) + 1e-3
    return torch.sigmoid(6.0 * ((ir - mu) / sd - 1.0))


def fusion_loss(
    fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, weights: FusionLossWeights | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss for luma tensors [B,1,H,W] plus its parts (for logs)."""
    w = weights or FusionLossWeights()
    target = torch.maximum(ir, vis)
    if w.salient_target:
        keep = 1.0 - w.salient_target * (1.0 - ir_saliency(ir))
        target = keep * target + (1.0 - keep) * (ir + vis) / 2
    intensity = F.l1_loss(fused, target)
    gradient = F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis)))
    structure = (1 - ssim(fused, ir)).mean() / 2 + (1 - ssim(fused, vis)).mean() / 2
    total = w.intensity * intensity + w.gradient * gradient + w.ssim * structure
    parts = {"intensity": intensity.item(), "gradient": gradient.item(), "ssim": structure.item()}
    if w.warm_target:
        warm = warm_target_deficit(fused, ir, vis)
        total = total + w.warm_target * warm
        parts["warm"] = warm.item()
    return total, parts


def warm_target_deficit(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Mean of relu(local mean of IR - local mean of the fusion) over warm-target pixels (IR-salient and over
    0.1 warmer than the visible image), 0 where there are none. One-sided and on 9x9 means, so the fusion may
    be brighter and keep the visible image's detail on a target, but not lose the target's warmth."""
    mask = ir_saliency(ir) * (ir - vis > 0.1).float()
    local = partial(F.avg_pool2d, kernel_size=9, stride=1, padding=4, count_include_pad=False)
    deficit = torch.relu(local(ir) - local(fused))
    return (mask * deficit).sum() / mask.sum().clamp_min(1.0)
