"""Shared fixtures: the benchmark data folder (skipped with a message when absent) and small images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
IVIF = REPO.parent / "shared" / "data" / "ivif"


@pytest.fixture(scope="session")
def ivif() -> Path:
    if not IVIF.is_dir():
        pytest.skip(f"benchmark images not found at {IVIF} (they live beside the clone in ../shared/data/ivif)")
    return IVIF


def _write_demo_pairs(root: Path, n: int, height: int = 48, width: int = 64) -> Path:
    from evafusion_core.demo import make_demo_pair
    from evafusion_core.io import save_image

    for i in range(n):
        ir, vis = make_demo_pair(height, width, seed=i)
        save_image(ir, root / "ir" / f"p{i}.png")
        save_image(vis, root / "vi" / f"p{i}.png")
    return root


@pytest.fixture(scope="session")
def write_demo_pairs():
    """``write(root, n, height, width)``: n procedural pairs as ``root/ir/p{i}.png`` and ``root/vi/p{i}.png``,
    the folder layout every pair loader reads; returns ``root``."""
    return _write_demo_pairs


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A small procedural pair: IR [1,1,H,W] and colour visible [1,3,H,W]."""
    from evafusion_core.demo import make_demo_pair

    ir, vis = make_demo_pair(96, 128, seed=1)
    return ir[None], vis[None]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny networks: on a shared 2-core machine OpenMP threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
