"""``light``: the project's own fast fusion network, built for CPUs.

Instead of pushing 64-channel features through the full image like DCEvo (~6 MFLOP
per pixel), it predicts *how to mix* the two sources. Each input is split into a
smooth base layer and a detail layer (x minus a box blur); a small CNN looks at a
low-resolution summary of both (1/``scale`` of each side) and predicts, per pixel,

* ``w``  - how much of the IR base to take (the rest comes from the visible base),
* ``gi``, ``gv`` - gains (0..2) on the IR and visible detail layers,

refined by a two-layer full-resolution path so that choices follow edges. The fused
luma is ``w * base_ir + (1 - w) * base_vis + gi * det_ir + gv * det_vis``. With the
shipped widths (the defaults below) a 640x480 pair costs about 1 GFLOP, most of it in
the low-resolution context CNN.

Which source a region follows depends on how many pixels its objects span: trained on
640x480-class images with the published loss alone, the network let warm targets fade into
the visible image on 1024x768 frames, though it kept them on the same pair shrunk; the
bundled weights are trained with the warm-target loss term as well, which keeps them at
every size. With ``work_size`` set
(off by default; ``load_fusion_model(..., work_size=640)``), a pair larger than that on
its long side is fused at that size, and the detail the shrinking removed (each source
minus its shrunk-and-regrown copy) is added back at full size with the network's own
detail gains, which keeps the full resolution's sharpness and costs less on HD frames.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .base import FusionNet


def box_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable box blur with replicate padding (edges do not darken).

    Running sums make it O(1) per pixel whatever the radius: on a CPU this is about 4x
    faster than ``avg_pool2d`` with a 1-pixel stride, and equal to it within float error.
    """
    k = 2 * radius + 1
    for dim in (-1, -2):
        pad = (radius + 1, radius, 0, 0) if dim == -1 else (0, 0, radius + 1, radius)
        padded = F.pad(x, pad, mode="replicate")
        padded.narrow(dim, 0, 1).zero_()  # the running sum starts from zero
        csum = padded.cumsum(dim)
        n = csum.shape[dim]
        x = (csum.narrow(dim, k, n - k) - csum.narrow(dim, 0, n - k)) / k
    return x


class LightFusionNet(FusionNet):
    """Base/detail mixing network; see the module docstring for the idea."""

    architecture = "light"
    pad_multiple = 8

    def __init__(
        self,
        channels: int = 48,
        fine_channels: int = 6,
        blur_radius: int = 4,
        depth: int = 5,
        scale: int = 8,
        work_size: int | None = None,
    ) -> None:
        super().__init__()
        if scale > self.pad_multiple or self.pad_multiple % scale:
            raise ValueError(f"scale must divide {self.pad_multiple}, got {scale}")
        self.blur_radius = blur_radius
        self.scale = scale
        self.set_work_size(work_size)
        layers: list[nn.Module] = [nn.Conv2d(6, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for i in range(depth - 1):
            d = 2 ** (i % 2)  # dilations 1, 2: a wide view at low resolution for few FLOPs
            layers += [nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 3, 1))
        self.context = nn.Sequential(*layers)
        self.fine = nn.Sequential(
            nn.Conv2d(4, fine_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(fine_channels, 3, 1),
        )
        nn.init.zeros_(self.fine[-1].weight)
        nn.init.zeros_(self.fine[-1].bias)

    def set_work_size(self, work_size: int | None) -> None:
        """Fuse frames larger than ``work_size`` on the long side at that size; 0 or None turns it off."""
        if work_size and work_size < self.pad_multiple:
            raise ValueError(f"work_size must be 0 or None (off) or at least {self.pad_multiple}, got {work_size}")
        self.work_size = work_size or None

    def hub_config(self) -> dict:
        """The saved config, with ``work_size`` as it is now: loaders set it after construction."""
        return {**super().hub_config(), "work_size": self.work_size}

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        h, w = ir.shape[-2:]
        if self.work_size is None or max(h, w) <= self.work_size:
            return self._mix(ir, vis)[0]
        m, f = self.pad_multiple, self.work_size / max(h, w)
        small = (max(m, round(h * f / m) * m), max(m, round(w * f / m) * m))
        ir_s, vis_s = (F.interpolate(x, size=small, mode="area") for x in (ir, vis))
        fused_s, gains_s = self._mix(ir_s, vis_s)
        up = partial(F.interpolate, size=(h, w), mode="bilinear", align_corners=False)
        gains = up(gains_s)
        fused = up(fused_s) + gains[:, :1] * (ir - up(ir_s)) + gains[:, 1:] * (vis - up(vis_s))
        return fused.clamp(0.0, 1.0)

    def _mix(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused luma at the inputs' own size, and the detail gains [B,2,H,W] it used."""
        base_ir, base_vis = box_blur(torch.cat((ir, vis), dim=1), self.blur_radius).split(1, dim=1)
        det_ir, det_vis = ir - base_ir, vis - base_vis
        full = torch.cat((ir, vis, det_ir.abs(), det_vis.abs()), dim=1)
        summary = torch.cat((F.avg_pool2d(full, self.scale), F.max_pool2d(full[:, 2:], self.scale)), dim=1)
        logits = F.interpolate(self.context(summary), size=ir.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits + self.fine(full)
        w = torch.sigmoid(logits[:, :1])
        gains = 2.0 * torch.sigmoid(logits[:, 1:])
        fused = w * base_ir + (1 - w) * base_vis + gains[:, :1] * det_ir + gains[:, 1:] * det_vis
        return fused.clamp(0.0, 1.0), gains
