"""Classic fusion rules with no weights, kept as yardsticks for every learned network."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import FusionNet


class AverageFusion(FusionNet):
    """(IR + VIS) / 2: the simplest rule; keeps noise low but halves thermal contrast."""

    architecture = "average"
    trainable = False

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return (ir + vis) * 0.5


class MaxFusion(FusionNet):
    """Pixel-wise maximum: keeps hot targets, but darkens nothing and loses visible shadows."""

    architecture = "max"
    trainable = False

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return torch.maximum(ir, vis)


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = _BINOMIAL.to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LaplacianFusion(FusionNet):
    """Laplacian-pyramid fusion (Burt & Adelson): average the coarsest level, keep the
    larger-magnitude detail coefficient at every other level. The standard multi-scale baseline."""

    architecture = "laplacian"
    trainable = False

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for _ in range(self.levels):
            if min(x.shape[-2:]) < 4:
                break
            low = _down(x)
            out.append(x - _up(low, tuple(x.shape[-2:])))
            x = low
        out.append(x)
        return out

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        pa, pb = self._pyramid(ir), self._pyramid(vis)
        fused = (pa[-1] + pb[-1]) * 0.5
        for da, db in zip(reversed(pa[:-1]), reversed(pb[:-1])):
            detail = torch.where(da.abs() >= db.abs(), da, db)
            fused = _up(fused, tuple(detail.shape[-2:])) + detail
        return fused.clamp(0.0, 1.0)
