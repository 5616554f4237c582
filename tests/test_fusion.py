"""Fusion networks and the inference path: shapes, padding, tiling, batching, errors."""

from __future__ import annotations

import math

import pytest
import torch

from evafusion_core.colour import luma
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


def _area(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(t, size=size, mode="area")


def _vertical_detail(t: torch.Tensor) -> float:
    return (t[..., 1:, :] - t[..., :-1, :]).abs().mean().item()


def test_work_size_fuses_an_enlarged_pair_like_the_original(pair):
    """Which source the trained light follows depends a little on how many pixels objects span (a pair
    enlarged 3x fuses, shrunk back, 0.021 away from the original's fusion; 0.042 for the previous
    default, S9); at a working size much less: 0.008."""
    from evafusion_core.hub import load_fusion_model
    from evafusion_core.io import resize_to

    ir, vis = pair  # 96x128
    big = [resize_to(t, (288, 384)) for t in (ir, vis)]
    model = load_fusion_model("light")
    native = fuse_luma(model, ir, vis)
    at_full_size = _area(fuse_luma(model, *big), (96, 128))
    model.work_size = 128
    assert torch.equal(fuse_luma(model, ir, vis), native)  # frames not larger than work_size are untouched
    at_work_size = _area(fuse_luma(model, *big), (96, 128))
    err_full, err_work = ((x - native).abs().mean().item() for x in (at_full_size, at_work_size))
    assert err_work < 0.01 and err_work < err_full / 2, (err_work, err_full)


def test_work_size_keeps_full_resolution_detail(pair):
    """The detail that shrinking removes is added back: a 1-pixel texture in the visible image survives,
    where fusing the shrunk pair and enlarging the result would lose it."""
    from evafusion_core.hub import load_fusion_model
    from evafusion_core.io import resize_to

    ir, vis = (resize_to(t, (288, 384)) for t in pair)
    yy, xx = torch.meshgrid(torch.arange(288), torch.arange(384), indexing="ij")
    vis = (vis + 0.05 * ((yy + xx) % 2).float()).clamp(0, 1)
    model = load_fusion_model("light", work_size=128)
    kept = _vertical_detail(fuse_luma(model, ir, vis))
    model.work_size = None
    full = _vertical_detail(fuse_luma(model, ir, vis))
    shrunk = fuse_luma(model, _area(ir, (96, 128)), _area(luma(vis), (96, 128)))
    enlarged = _vertical_detail(torch.nn.functional.interpolate(shrunk, size=(288, 384), mode="bilinear"))
    assert kept > 0.5 * full and kept > 3 * enlarged, (kept, full, enlarged)


def test_warm_target_share_is_one_for_the_ir_image_and_zero_for_the_visible():
    from evafusion_core.evaluate import warm_target_share

    ir = torch.full((1, 1, 20, 20), 0.2)
    ir[..., 5:10, 5:10] = 0.9  # a warm target covering the hottest 10%+
    vis = torch.full((1, 1, 20, 20), 0.4)
    assert warm_target_share(ir, vis, ir) == pytest.approx(1.0)
    assert warm_target_share(ir, vis, vis) == pytest.approx(0.0)
    assert warm_target_share(ir, vis, (ir + vis) / 2) == pytest.approx(0.5)
    assert math.isnan(warm_target_share(vis, vis, vis))  # no warm pixels


def test_default_light_keeps_warm_targets():
    """The bundled light was trained with the warm-target term: on the 640x480 demo pair it keeps nearly
    all of its people's IR contrast (the previous default, trained without the term, kept 0.74 and
    `average` keeps half by construction)."""
    from evafusion_core.demo import make_demo_pair
    from evafusion_core.evaluate import warm_target_share
    from evafusion_core.hub import load_fusion_model

    ir, vis = (t[None] for t in make_demo_pair(480, 640, seed=1))
    shares = {name: warm_target_share(luma(ir), luma(vis), fuse_luma(load_fusion_model(name), ir, vis))
              for name in ("light", "average")}
    assert shares["light"] > 0.95 and shares["average"] == pytest.approx(0.5, abs=0.02), shares
