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


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A small procedural pair: IR [1,1,H,W] and colour visible [1,3,H,W]."""
    from evafusion_core.demo import make_demo_pair

    ir, vis = make_demo_pair(96, 128, seed=1)
    return ir[None], vis[None]
