"""The unsupervised fusion losses: SSIM, Sobel, and the intensity target with and without IR saliency."""

from __future__ import annotations

import torch

from evafusion_core.losses import (
    FusionLossWeights,
    fusion_loss,
    ir_saliency,
    sobel_magnitude,
    ssim,
    warm_target_deficit,
)


def test_ssim_and_sobel_basics():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 32, 32, generator=g)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    noisy = (a + 0.2 * torch.randn(2, 1, 32, 32, generator=g)).clamp(0, 1)
    assert (ssim(a, noisy) < 0.9).all()
    assert sobel_magnitude(torch.full((1, 1, 8, 8), 0.3)).abs().max() == 0
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    assert sobel_magnitude(ramp)[..., 2:-2, 2:-2].allclose(torch.full((1, 1, 4, 4), 8 / 7), atol=1e-5)


def test_salient_target_follows_the_brighter_source_only_on_hot_pixels():
    ir = torch.full((1, 1, 16, 16), 0.2)
    ir[..., 6:10, 6:10] = 0.9  # a hot target
    vis = torch.full((1, 1, 16, 16), 0.6)
    sal = ir_saliency(ir)
    assert sal[..., 8, 8] > 0.99 and sal[..., 0, 0] < 0.01
    brighter = torch.maximum(ir, vis)
    mean = (ir + vis) / 2
    for fused, weight, expect_zero in ((brighter, 0.0, True), (mean, 0.0, False)):
        _, parts = fusion_loss(fused, ir, vis, FusionLossWeights(salient_target=weight))
        assert (parts["intensity"] < 1e-6) == expect_zero
    # With the salient target: the brighter source on the hot target, the mean elsewhere.
    target = torch.where(sal > 0.5, brighter, mean)
    _, parts = fusion_loss(target, ir, vis, FusionLossWeights(salient_target=1.0))
    assert parts["intensity"] < 0.01
    _, parts_max = fusion_loss(brighter, ir, vis, FusionLossWeights(salient_target=1.0))
    assert parts_max["intensity"] > 0.1


def test_warm_target_term_charges_a_fusion_that_drops_a_warm_target_only():
    ir = torch.full((1, 1, 32, 32), 0.2)
    ir[..., 10:22, 10:22] = 0.9  # a warm target
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float().view(1, 1, 32, 32)
    vis = 0.4 + 0.1 * checker  # visible texture, cooler than the target
    kept = torch.maximum(ir, vis)
    dropped = vis.clone()
    brighter_with_texture = (kept + 0.05 * checker).clamp(0, 1)
    deficits = {name: warm_target_deficit(f, ir, vis).item()
                for name, f in (("kept", kept), ("dropped", dropped), ("textured", brighter_with_texture))}
    assert deficits["dropped"] > 0.15, deficits  # the target's warmth is lost
    assert deficits["kept"] < 0.02 and deficits["textured"] < 0.02, deficits  # brighter or textured is free
    assert warm_target_deficit(vis, vis, vis).item() == 0  # no warm pixels, no charge
    _, parts = fusion_loss(dropped, ir, vis, FusionLossWeights(warm_target=2.0))
    assert parts["warm"] == deficits["dropped"]
    assert "warm" not in fusion_loss(dropped, ir, vis)[1]
