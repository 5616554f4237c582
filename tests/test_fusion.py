"""Fusion networks and the inference path: shapes, padding, tiling, batching, errors."""

from __future__ import annotations

import pytest
import torch

from evafusion_core.errors import PairError
from evafusion_core.inference import fuse, fuse_luma
from evafusion_core.models import BASELINES, create_model


@pytest.mark.parametrize("name", ["light", *BASELINES])
def test_any_size_shape_and_range(name, pair):
    ir, vis = pair
    ir, vis = ir[..., :45, :61], vis[..., :45, :61]  # odd size: inference pads and crops
    out = fuse(create_model(name).eval(), ir, vis)
    assert out.shape == (1, 3, 45, 61)
    assert out.min() >= 0 and out.max() <= 1


def test_baselines_do_what_they_say(pair):
    ir, vis = pair
    from evafusion_core.colour import luma

    avg = fuse_luma(create_model("average"), ir, vis)
    assert torch.allclose(avg, (luma(ir) + luma(vis)) / 2, atol=1e-6)
    mx = fuse_luma(create_model("max"), ir, vis)
    assert torch.allclose(mx, torch.maximum(luma(ir), luma(vis)), atol=1e-6)
    # Laplacian fusion of an image with itself gives the image back (perfect reconstruction).
    same = fuse_luma(create_model("laplacian"), ir, ir)
    assert torch.allclose(same, ir, atol=1e-5)


def test_batch_equals_single(pair):
    ir, vis = pair
    model = create_model("light").eval()
    batch = fuse(model, torch.cat([ir, ir.flip(-1), ir * 0.5]), torch.cat([vis, vis.flip(-1), vis]), batch_size=2)
    single = fuse(model, ir.flip(-1), vis.flip(-1))
    assert torch.allclose(batch[1:2], single, atol=1e-6)


def test_tiling_matches_whole_image_for_pointwise_model(pair):
    ir, vis = pair
    model = create_model("average")
    assert torch.allclose(fuse(model, ir, vis, tile=40, overlap=8), fuse(model, ir, vis), atol=1e-6)


def test_tiling_close_for_light(pair):
    ir, vis = pair
    model = create_model("light").eval()
    whole = fuse_luma(model, ir, vis)
    tiled = fuse_luma(model, ir, vis, tile=64, overlap=24)
    assert tiled.shape == whole.shape
    # Tiles see less context, so small differences are expected; seams must not appear.
    assert (tiled - whole).abs().mean() < 0.02


def test_grey_visible_gives_grey_output(pair):
    ir, vis = pair
    out = fuse(create_model("light").eval(), ir, vis.mean(1, keepdim=True))
    assert out.shape[1] == 1


def test_clear_errors(pair):
    ir, vis = pair
    model = create_model("average")
    with pytest.raises(PairError, match="batch size mismatch: 2 IR images but 1 visible"):
        fuse(model, torch.cat([ir, ir]), vis)
    with pytest.raises(PairError, match="size mismatch"):
        fuse(model, ir[..., :40, :40], vis)
    bad = ir.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="IR input: contains NaN"):
        fuse(model, bad, vis)
    with pytest.raises(PairError, match="4 channels"):
        fuse(model, ir, torch.rand(1, 4, *vis.shape[-2:]))
