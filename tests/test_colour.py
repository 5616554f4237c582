import torch

from evafusion_core.colour import grey_u8, luma, recolour, rgb_to_ycbcr, ycbcr_to_rgb


def test_ycbcr_roundtrip_and_bt601():
    rgb = torch.rand(2, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert luma(red).item() == torch.tensor(0.299).item()


def test_recolour_keeps_chroma_and_grey_stays_grey():
    vis = torch.rand(1, 3, 4, 4)
    y = luma(vis)
    assert torch.allclose(recolour(y, vis), vis, atol=1e-5)
    grey = torch.rand(1, 1, 4, 4)
    assert recolour(grey, grey).shape == (1, 1, 4, 4)


def test_grey_u8_matlab_rounding():
    import numpy as np

    px = np.array([[[10.0, 200.0, 30.0]]])
    expected = np.floor(0.298936021293775 * 10 + 0.587043074451121 * 200 + 0.114020904255103 * 30 + 0.5)
    assert grey_u8(px)[0, 0] == expected
