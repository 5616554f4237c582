"""A procedural IR/visible demo pair, so that the project can show itself without benchmark data.

The scene has what makes fusion worth doing: warm people and a car that are bright
in IR but nearly invisible in a dark part of the visible image, and textured
background (bricks, foliage noise, sky gradient) that only the visible camera sees.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .io import save_image

#: The example workflows of a repository checkout (the demo runs them through ComfyUI).
WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


def _smooth_noise(g: torch.Generator, h: int, w: int, cell: int) -> torch.Tensor:
    coarse = torch.rand(1, 1, h // cell + 2, w // cell + 2, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0, 0]


def make_demo_pair(height: int = 480, width: int = 640, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (ir [1,H,W], vis [3,H,W]) in 0..1, deterministic for a given seed."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")

    # Visible: sky gradient, a brick wall, textured ground, and a shadowed right half.
    sky = torch.stack((0.45 + 0.3 * yy, 0.6 + 0.25 * yy, 0.9 - 0.1 * yy))
    bricks = ((torch.floor(yy * 24) % 2 == 0) ^ (torch.floor(xx * 16 + 0.5 * (torch.floor(yy * 24) % 2)) % 2 == 0))
    wall = torch.stack((0.55 + 0.15 * bricks, 0.3 + 0.08 * bricks, 0.25 + 0.05 * bricks))
    mortar = ((yy * 24) % 1 < 0.08) | ((xx * 16 + 0.5 * (torch.floor(yy * 24) % 2)) % 1 < 0.04)
    wall = torch.where(mortar, torch.full_like(wall, 0.75), wall)
    foliage = 0.5 * _smooth_noise(g, height, width, 6) + 0.5 * _smooth_noise(g, height, width, 2)
    ground = torch.stack((0.25 + 0.3 * foliage, 0.4 + 0.35 * foliage, 0.15 + 0.2 * foliage))
    vis = torch.where(yy < 0.3, sky, torch.where(yy < 0.65, wall, ground))
    shadow = 1.0 - 0.8 * torch.sigmoid((xx - 0.55) * 40)
    vis = (vis * shadow).clamp(0, 1)

    # IR: cool sky, mid-temperature wall and ground with slow thermal variation, hot targets.
    ir = torch.where(yy < 0.3, 0.15 + 0.05 * yy, torch.where(yy < 0.65, 0.4 + 0.03 * bricks, 0.3 + 0.1 * foliage))
    ir = ir + 0.08 * _smooth_noise(g, height, width, 40)
    targets = torch.zeros_like(ir)
    for cx, cy, sx, sy in ((0.7, 0.72, 0.025, 0.11), (0.82, 0.75, 0.022, 0.1), (0.2, 0.8, 0.02, 0.09)):
        body = torch.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) ** 2)
        head = torch.exp(-(((xx - cx) / (sx * 0.7)) ** 2 + ((yy - cy + sy * 1.3) / (sx * 0.9)) ** 2) ** 2)
        targets = torch.maximum(targets, torch.maximum(body, head))
    car = ((xx - 0.45).abs() < 0.08) & ((yy - 0.85).abs() < 0.04)
    targets = torch.maximum(targets, 0.8 * car.float())
    ir = (ir + 0.55 * targets).clamp(0, 1)
    # The people are dark silhouettes in the shadowed visible image.
    vis = vis * (1 - 0.5 * targets.unsqueeze(0))
    return ir.unsqueeze(0), vis


def write_comfy_inputs(input_dir: str | Path) -> None:
    """The files the example workflows expect in ComfyUI's input folder: one pair as
    ``evafusion_demo_{ir,vis}.png`` and a small folder of pairs ``evafusion_demo_folder/{ir,vi}``."""
    root = Path(input_dir)
    ir, vis = make_demo_pair(seed=0)
    save_image(ir, root / "evafusion_demo_ir.png")
    save_image(vis, root / "evafusion_demo_vis.png")
    for seed in (1, 2):
        ir, vis = make_demo_pair(240, 320, seed=seed)
        save_image(ir, root / "evafusion_demo_folder" / "ir" / f"demo{seed}.png")
        save_image(vis, root / "evafusion_demo_folder" / "vi" / f"demo{seed}.png")


def demo_side_by_side(input_dir: str | Path, fused_path: str | Path, out: str | Path) -> Path:
    """IR | visible | fused for the README and for people who would rather look than read."""
    from .io import load_image, side_by_side

    root = Path(input_dir)
    images = [load_image(root / "evafusion_demo_ir.png"), load_image(root / "evafusion_demo_vis.png"),
              load_image(fused_path)]
    return save_image(side_by_side(images, ["IR", "visible", "fused"]), out)


def write_demo_pair(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the demo pair as ``ir/demo.png`` and ``vi/demo.png`` under ``folder``."""
    ir, vis = make_demo_pair(seed=seed)
    root = Path(folder)
    return save_image(ir, root / "ir" / "demo.png"), save_image(vis, root / "vi" / "demo.png")
