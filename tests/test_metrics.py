"""Tests for evafusion_core.metrics.

The reference tests read the shared data and reference vectors from ``../shared`` relative to the
repository root (never committed into the project) and skip with a message where they are absent.
The input-checking and property tests on synthetic images always run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from evafusion_core.colour import grey_u8
from evafusion_core.metrics import (
    CONVENTIONS,
    HIGHER_IS_BETTER,
    METRICS,
    MIN_SIZE,
    compute_metrics,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IVIF = SHARED / "data" / "ivif"
VECTORS = SHARED / "docs" / "metric_vectors.json"

needs_data = pytest.mark.skipif(
    not IVIF.is_dir() or not VECTORS.is_file(),
    reason=f"shared IVIF data or reference vectors not found under {SHARED} (../shared from the repo root)",
)

# Tolerances from METRICS.md: 1e-6 relative, 1e-4 for Qabf and VIF. The JSON rounds to 6 decimals,
# so tiny values such as Nabf = 1e-06 also need an absolute floor of half a unit in the last place
# (plus a hair for float noise).
RTOL = {"Qabf": 1e-4, "VIF": 1e-4}
ATOL = 1e-6


def _load_grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return grey_u8(np.asarray(im).astype(np.float64))


def _fuse(a: np.ndarray, b: np.ndarray, how: str) -> np.ndarray:
    if how == "average":
        return np.floor((a + b) / 2 + 0.5)
    if how == "max":
        return np.maximum(a, b)
    raise ValueError(how)


def _cases() -> list[dict]:
    if not VECTORS.is_file():
        return []
    return json.loads(VECTORS.read_text())["cases"]


_PAIRS: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _pair(set_name: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    key = (set_name, name)
    if key not in _PAIRS:
        _PAIRS[key] = (_load_grey(IVIF / set_name / "ir" / name), _load_grey(IVIF / set_name / "vi" / name))
    return _PAIRS[key]


def _textured(seed: int, shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    """A smooth-ish random grey image on 0..255 with edges, deterministic."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 230 + 10
    return np.floor(img + 0.5)


# ------------------------------------------------------------------------------------------------
# Reference vectors
# ------------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(
    "case", _cases(), ids=lambda c: f"{c['set']}-{c['name']}-{c['fused']}" if isinstance(c, dict) else str(c)
)
def test_reference_vectors(case: dict, convention: str) -> None:
    a, b = _pair(case["set"], case["name"])
    f = _fuse(a, b, case["fused"])
    got = compute_metrics(a, b, f, convention=convention)
    assert tuple(got) == METRICS, "every convention returns the full metric set"
    expected = case[convention]
    assert expected, "reference case has no values for this convention"
    for name, ref in expected.items():
        assert got[name] == pytest.approx(ref, rel=RTOL.get(name, 1e-6), abs=ATOL), (
            f"{name} ({convention}) = {got[name]!r}, reference {ref!r}"
        )


@needs_data
def test_reference_vectors_present() -> None:
    cases = _cases()
    assert len(cases) >= 8
    assert {c["set"] for c in cases} >= {"msrs34", "roadscene171", "m3fd10"}


@needs_data
def test_cdd_extras_on_real_pair() -> None:
    """Metrics that the cdd reference lacks: CC and Nabf as tang, MSE on the 0..255 scale."""
    a, b = _pair("msrs34", "00537D.png")
    f = _fuse(a, b, "max")
    tang = compute_metrics(a, b, f, "tang")
    cdd = compute_metrics(a, b, f, "cdd")
    assert cdd["CC"] == tang["CC"]
    assert cdd["Nabf"] == tang["Nabf"]
    assert cdd["MSE"] == pytest.approx(tang["MSE"] * 255.0**2, rel=1e-12)
    # cdd PSNR is built on that same 0..255 MSE with peak max(F).
    assert cdd["PSNR"] == pytest.approx(10 * math.log10(f.max() ** 2 / cdd["MSE"]), rel=1e-12)
    # tang PSNR is the textbook value + 20 log10(255) (about 48.13 dB).
    textbook = 10 * math.log10(255.0**2 / cdd["MSE"])
    assert tang["PSNR"] == pytest.approx(textbook + 20 * math.log10(255.0), rel=1e-12)


@needs_data
def test_peer_table_means_fmb5() -> None:
    """Per-set means of the shared peer table (tang, 4 decimals), incl. published methods' outputs."""
    table = IVIF / "peer_metrics.csv"
    fused_root = IVIF / "fmb5" / "fused"
    if not table.is_file() or not fused_root.is_dir():
        pytest.skip(f"{table} or {fused_root} not found")
    rows = [r for r in csv.DictReader(table.open()) if r["set"] == "fmb5"]
    names = sorted(p.name for p in (IVIF / "fmb5" / "ir").iterdir())
    per_method: dict[str, list[dict[str, float]]] = {}
    for name in names:
        a, b = _pair("fmb5", name)
        for row in rows:
            method = row["method"]
            if method in ("average", "max"):
                f = _fuse(a, b, method)
            else:
                f = _load_grey(fused_root / method / (Path(name).stem + ".png"))
            per_method.setdefault(method, []).append(compute_metrics(a, b, f))
    assert rows
    for row in rows:
        vals = per_method[row["method"]]
        assert len(vals) == int(row["n"])
        for metric in METRICS:
            if metric not in row:
                continue
            mean = float(np.mean([v[metric] for v in vals]))
            assert mean == pytest.approx(float(row[metric]), abs=0.51e-4), f"{row['method']} {metric}"


@needs_data
def test_qabf_max_beats_blurred_average() -> None:
    """Max fusion keeps the strongest source edges; a blurred average loses them."""
    a, b = _pair("msrs34", "00537D.png")
    blurred = ndimage.gaussian_filter(_fuse(a, b, "average"), 2.0)
    for convention in CONVENTIONS:
        good = compute_metrics(a, b, np.maximum(a, b), convention, names=["Qabf", "VIF", "SF", "AG"])
        bad = compute_metrics(a, b, blurred, convention, names=["Qabf", "VIF", "SF", "AG"])
        for metric in good:
            assert good[metric] > bad[metric], f"{metric} ({convention}): max {good[metric]} <= {bad[metric]}"


@needs_data
def test_rgb_input_matches_grey_reduction() -> None:
    from PIL import Image

    path = IVIF / "msrs34" / "vi" / "00537D.png"
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.float64)
    a, _ = _pair("msrs34", "00537D.png")
    grey = grey_u8(rgb)
    from_rgb = compute_metrics(a, rgb, np.maximum(a, grey))
    from_grey = compute_metrics(a, grey, np.maximum(a, grey))
    assert from_rgb == from_grey


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def test_public_constants() -> None:
    assert METRICS == (
        "EN", "SD", "SF", "AG", "MI", "CC", "SCD", "VIF", "Qabf", "Nabf", "SSIM", "PSNR", "MSE",
    )  # fmt: skip
    assert CONVENTIONS == ("tang", "cdd")
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert [m for m in METRICS if not HIGHER_IS_BETTER[m]] == ["Nabf", "MSE"]


def test_names_subset_order_and_case() -> None:
    a, b = _textured(1), _textured(2)
    f = np.maximum(a, b)
    full = compute_metrics(a, b, f)
    got = compute_metrics(a, b, f, names=["psnr", "EN", "qabf", "EN"])
    assert list(got) == ["PSNR", "EN", "Qabf"]
    assert all(got[k] == full[k] for k in got)
    assert list(compute_metrics(a, b, f, names="SSIM")) == ["SSIM"]
    assert all(isinstance(v, float) for v in full.values())


def test_accepts_uint8_and_single_channel() -> None:
    a, b = _textured(3), _textured(4)
    f = np.floor((a + b) / 2 + 0.5)
    ref = compute_metrics(a, b, f)
    assert compute_metrics(a.astype(np.uint8), b.astype(np.uint8), f.astype(np.uint8)) == ref
    assert compute_metrics(a[..., None], b, f[..., None]) == ref


# ------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes() -> None:
    a = _textured(1, (64, 80))
    b = _textured(2, (64, 81))
    with pytest.raises(ValueError) as err:
        compute_metrics(a, b, a)
    msg = str(err.value)
    assert "(64, 80)" in msg and "(64, 81)" in msg


def test_rgb_shape_mismatch_reports_original_shapes() -> None:
    a = _textured(1, (64, 80))
    rgb = np.repeat(_textured(2, (60, 80))[..., None], 3, axis=2)
    with pytest.raises(ValueError, match=r"\(60, 80, 3\)"):
        compute_metrics(a, rgb, a)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("role", ["ir", "vis", "fused"])
def test_non_finite_rejected(bad: float, role: str) -> None:
    imgs = {"ir": _textured(1), "vis": _textured(2), "fused": _textured(3)}
    imgs[role] = imgs[role].copy()
    imgs[role][5, 7] = bad
    with pytest.raises(ValueError, match=rf"{role} contains NaN or infinite"):
        compute_metrics(imgs["ir"], imgs["vis"], imgs["fused"])


def test_unknown_metric_lists_valid_names() -> None:
    a = _textured(1)
    with pytest.raises(ValueError) as err:
        compute_metrics(a, a, a, names=["EN", "FMI"])
    msg = str(err.value)
    assert "'FMI'" in msg
    assert all(name in msg for name in METRICS)


def test_unknown_convention_lists_valid_ones() -> None:
    a = _textured(1)
    with pytest.raises(ValueError, match="vifb.*tang, cdd"):
        compute_metrics(a, a, a, convention="vifb")


@pytest.mark.parametrize(
    "shape",
    [(64,), (64, 80, 4), (2, 64, 80, 3), (64, 80, 2)],
)
def test_bad_dimensions(shape: tuple[int, ...]) -> None:
    good = _textured(1)
    with pytest.raises(ValueError, match="ir must be"):
        compute_metrics(np.zeros(shape), good, good)


def test_too_small_and_non_numeric() -> None:
    tiny = np.zeros((MIN_SIZE - 1, 20))
    with pytest.raises(ValueError, match="at least"):
        compute_metrics(tiny, tiny, tiny)
    good = _textured(1)
    with pytest.raises(ValueError, match="numeric"):
        compute_metrics(good.astype(object), good, good)
    with pytest.raises(ValueError, match="numeric"):
        compute_metrics(good > 100, good, good)


# ------------------------------------------------------------------------------------------------
# Sanity and properties on synthetic images
# ------------------------------------------------------------------------------------------------


def test_identical_images() -> None:
    """F = A = B: SSIM is 1 per source, MSE 0, PSNR infinite, CC 1, VIF 1 per source."""
    a = _textured(5)
    tang = compute_metrics(a, a, a, "tang")
    cdd = compute_metrics(a, a, a, "cdd")
    assert tang["SSIM"] == pytest.approx(1.0, abs=1e-12)  # mean over sources
    assert cdd["SSIM"] == pytest.approx(2.0, abs=1e-12)  # sum over sources
    for res in (tang, cdd):
        assert res["MSE"] == 0.0
        assert res["PSNR"] == math.inf
        assert res["CC"] == pytest.approx(1.0, abs=1e-12)
        assert res["VIF"] == pytest.approx(2.0, rel=1e-6)
        assert res["Nabf"] == 0.0  # F never has stronger edges than itself
        assert 0.9 < res["Qabf"] < 1.0
    # No grey level 254/255 here, so the MI quirk is inactive: MI(F,X) = H(F) per source.
    assert tang["MI"] == pytest.approx(2 * tang["EN"], rel=1e-12)
    assert cdd["MI"] == pytest.approx(2 * tang["EN"] * math.log(2), rel=1e-12)


def test_fused_equals_one_source() -> None:
    a, b = _textured(6), _textured(7)
    tang = compute_metrics(a, b, a, "tang")
    ab = compute_metrics(a, b, b, "tang")
    pair = compute_metrics(b, b, a, "tang")  # SSIM/MSE of A against B alone, twice
    assert tang["SSIM"] == pytest.approx(0.5 * (1.0 + pair["SSIM"]), rel=1e-12)
    assert tang["MSE"] == pytest.approx(0.5 * pair["MSE"], rel=1e-12)
    assert tang["SSIM"] == pytest.approx(ab["SSIM"], rel=1e-12)  # symmetric in which source is copied
    assert tang["EN"] == compute_metrics(a, a, a)["EN"]


def test_mi_quirk_merges_254_and_255_in_joint_histogram_only() -> None:
    """F = A = B with levels 254/255 at random: exact MI(F,X) = H = 1 bit; the tang quirk sees a
    joint histogram with a single bin, so MI(F,X) = 2 bits. cdd (no quirk) gives H in nats."""
    rng = np.random.default_rng(0)
    img = np.where(rng.random((64, 64)) < 0.5, 254.0, 255.0)
    tang = compute_metrics(img, img, img, "tang", names=["MI", "EN"])
    cdd = compute_metrics(img, img, img, "cdd", names=["MI"])
    h = tang["EN"]
    assert h == pytest.approx(1.0, abs=1e-3)
    assert tang["MI"] == pytest.approx(4 * h, rel=1e-12)
    assert cdd["MI"] == pytest.approx(2 * h * math.log(2), rel=1e-12)


def test_mi_conventions_agree_without_top_levels() -> None:
    a, b = _textured(8), _textured(9)
    assert max(a.max(), b.max()) < 254
    f = np.maximum(a, b)
    tang = compute_metrics(a, b, f, "tang", names=["MI"])["MI"]
    cdd = compute_metrics(a, b, f, "cdd", names=["MI"])["MI"]
    assert cdd == pytest.approx(tang * math.log(2), rel=1e-12)


def test_ag_conventions_differ_by_size_factor() -> None:
    a, b = _textured(10), _textured(11)
    f = np.maximum(a, b)
    m, n = f.shape
    tang = compute_metrics(a, b, f, "tang", names=["AG"])["AG"]
    cdd = compute_metrics(a, b, f, "cdd", names=["AG"])["AG"]
    assert tang == pytest.approx(cdd * m * n / ((m - 1) * (n - 1)), rel=1e-12)


def test_no_reference_metrics_on_simple_images() -> None:
    a, b = _textured(12), _textured(13)
    flat = np.full(a.shape, 100.0)
    res = compute_metrics(a, b, flat, names=["EN", "SD", "SF", "AG"])
    assert res == {"EN": 0.0, "SD": 0.0, "SF": 0.0, "AG": 0.0}
    half = np.zeros(a.shape)
    half[:, : a.shape[1] // 2] = 200.0
    res = compute_metrics(a, b, half, names=["EN", "SD"])
    assert res["EN"] == pytest.approx(1.0)
    assert res["SD"] == pytest.approx(100.0)


def test_noise_lowers_quality() -> None:
    a, b = _textured(14), _textured(15)
    f = np.maximum(a, b)
    noisy = np.clip(f + np.random.default_rng(1).normal(0, 25, f.shape), 0, 255)
    for convention in CONVENTIONS:
        clean = compute_metrics(a, b, f, convention)
        dirty = compute_metrics(a, b, noisy, convention)
        for metric in ("SSIM", "PSNR", "VIF", "Qabf", "CC"):
            assert clean[metric] > dirty[metric], f"{metric} ({convention})"
        assert clean["MSE"] < dirty["MSE"]
        assert clean["Nabf"] < dirty["Nabf"]


def test_small_images_vif() -> None:
    """Below 17 px no VIF scale fits and VIF is nan; the other metrics stay finite."""
    a, b = _textured(16, (12, 20)), _textured(17, (12, 20))
    res = compute_metrics(a, b, np.maximum(a, b))
    assert math.isnan(res["VIF"])
    assert all(math.isfinite(v) for k, v in res.items() if k != "VIF")
    mid = compute_metrics(_textured(16, (30, 30)), _textured(17, (30, 30)), _textured(18, (30, 30)))
    assert math.isfinite(mid["VIF"])
