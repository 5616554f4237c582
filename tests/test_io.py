from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evafusion_core.errors import ImageLoadError, PairError
from evafusion_core.io import HighBitDepth, find_pairs, load_image, load_pair, load_u8, save_image


def _write(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_8bit_grey_rgb_rgba(tmp_path):
    grey = _write(tmp_path / "g.png", np.full((4, 5), 51, np.uint8))
    rgb = _write(tmp_path / "c.png", np.dstack([np.full((4, 5), v, np.uint8) for v in (255, 0, 0)]))
    rgba = _write(tmp_path / "a.png", np.dstack([np.full((4, 5), v, np.uint8) for v in (0, 255, 0, 10)]))
    assert load_image(grey).shape == (1, 4, 5) and load_image(grey).max().item() == pytest.approx(0.2)
    assert load_image(rgb).shape == (3, 4, 5)
    a = load_image(rgba)
    assert a.shape == (3, 4, 5) and a[1].min().item() == 1.0  # alpha dropped, colour kept
    # IR stored as 3-channel grey collapses to one channel without loss.
    assert load_image(rgb, grey=True).shape == (1, 4, 5)


def test_16bit_percentile_and_fixed(tmp_path):
    a = np.full((20, 20), 30000, np.uint16)
    a[0, 0] = 65535  # a hot pixel must not squash the rest with percentile normalisation
    a[10:, :] = 31000
    p = tmp_path / "t16.png"
    Image.fromarray(a).save(p)
    robust = load_image(p, high_bit=HighBitDepth("percentile", 1, 99))
    assert robust.min().item() == 0.0 and robust[0, 15, 5].item() == pytest.approx(1.0)
    fixed = load_image(p, high_bit=HighBitDepth("fixed"))
    assert fixed[0, 15, 5].item() == pytest.approx(31000 / 65535, rel=1e-5)
    with pytest.raises(ValueError, match="normalisation"):
        HighBitDepth("nope")


def test_16bit_tiff(tmp_path):
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7)
    p = tmp_path / "t.tiff"
    Image.fromarray(a).save(p)
    t = load_image(p, high_bit=HighBitDepth("minmax"))
    assert t.shape == (1, 64, 64) and t.min().item() == 0.0 and t.max().item() == 1.0


def test_missing_corrupt_nan(tmp_path):
    with pytest.raises(ImageLoadError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageLoadError, match="bad.png: cannot read image"):
        load_image(bad)
    f = np.zeros((4, 4), np.float32)
    f[1, 1] = np.nan
    nan = tmp_path / "nan.tiff"
    Image.fromarray(f, mode="F").save(nan)
    with pytest.raises(ImageLoadError, match="nan.tiff: contains NaN"):
        load_image(nan)


def test_pair_size_mismatch_names_both(tmp_path):
    ir = _write(tmp_path / "ir.png", np.zeros((10, 12), np.uint8))
    vis = _write(tmp_path / "vis.png", np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(PairError, match=r"12x10.*24x20"):
        load_pair(ir, vis)
    a, b = load_pair(ir, vis, resize=True)
    assert a.shape == (1, 20, 24) and b.shape == (3, 20, 24)


def test_find_pairs_lists_unmatched(tmp_path):
    for d, names in (("ir", ["a", "b", "c"]), ("vi", ["a", "b", "d"])):
        (tmp_path / d).mkdir()
        for n in names:
            _write(tmp_path / d / f"{n}.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(PairError, match=r"ir: c(.|\n)*vi: d"):
        find_pairs(tmp_path / "ir", tmp_path / "vi")
    (tmp_path / "vi" / "c.jpg").write_bytes((tmp_path / "vi" / "a.png").read_bytes())
    (tmp_path / "vi" / "d.png").unlink()
    assert [s for s, _ in find_pairs(tmp_path / "ir", tmp_path / "vi")] == ["a", "b", "c"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLoadError, match="no images found"):
        find_pairs(tmp_path / "empty", tmp_path / "vi")


def test_save_is_atomic_and_roundtrips(tmp_path):
    t = torch.rand(3, 8, 9)
    p = save_image(t, tmp_path / "sub" / "x.png")
    assert sorted(x.name for x in p.parent.iterdir()) == ["x.png"]  # no temporary left behind
    back = load_u8(p)
    assert back.shape == (8, 9, 3)
    assert np.abs(back - (t.permute(1, 2, 0).numpy() * 255).round()).max() == 0
