"""Region proposals: label maps, merging, superpixels, and SAM through the real segment-anything package
(a tiny randomly initialised SAM built from the package's own modules: no checkpoint can be downloaded)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from evafusion_core.errors import ModelLoadError
from evafusion_core.regions import (
    OFFICIAL_FILES,
    build_sam_from_config,
    colour_overlay,
    infer_model_type,
    labels_from_mask_batch,
    masks_to_labels,
    merge_small_regions,
    propose_regions,
    regions_to_masks,
    resolve_sam_checkpoint,
    sam_masks,
    superpixel_regions,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_partition(labels: torch.Tensor | np.ndarray, shape: tuple[int, int]) -> None:
    lab = torch.as_tensor(labels)
    assert tuple(lab.shape) == shape
    assert lab.dtype == torch.int64
    k = int(lab.max()) + 1
    assert lab.min() == 0
    assert torch.equal(torch.unique(lab), torch.arange(k)), "labels must be dense 0..K-1"
    masks = regions_to_masks(lab)
    assert masks.shape == (k, *shape)
    assert torch.equal(masks.sum(0), torch.ones(shape, dtype=torch.int64)), "every pixel in exactly one region"


@pytest.fixture(scope="module")
def tiny_sam():
    from segment_anything.modeling import Sam

    torch.manual_seed(0)
    sam = build_sam_from_config(
        encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1], image_size=64,
        patch_size=8, prompt_embed_dim=32, window_size=4, decoder_mlp_dim=64, decoder_num_heads=2,
        iou_head_hidden_dim=32, mask_in_chans=4,
    )
    assert isinstance(sam, Sam)
    return sam


# --- label maps ---------------------------------------------------------------------------------


def test_small_region_merges_into_the_neighbour_with_the_longest_border():
    lab = np.zeros((8, 8), dtype=np.int64)
    lab[:, 4:] = 1  # two big halves
    lab[3:5, 3:5] = 2  # a 2x2 blob: 3 border pixels touch 0... and 3 touch 1 (tie) -> lower label
    lab[0, 0] = 3  # a 1-pixel corner region touching only label 0
    out = merge_small_regions(lab, min_area=5)
    assert_partition(out, (8, 8))
    assert int(out.max()) == 1  # only the two halves survive
    assert out[0, 0] == out[1, 1]  # the corner pixel joined its only neighbour


def test_small_region_inside_background_goes_to_background():
    lab = np.zeros((10, 10), dtype=np.int64)  # 0 = background
    lab[:, 7:] = 1
    lab[2, 2] = 5  # isolated speck surrounded by background only
    lab[6:8, 5:7] = 4  # small blob touching background and region 1? no: columns 5-6 touch column 7 (region 1)
    out = merge_small_regions(lab, min_area=6, background=0)
    assert_partition(out, (10, 10))
    assert out[2, 2] == out[0, 0]  # speck -> background
    assert out[6, 6] == out[0, 9]  # blob -> the real neighbour, not the background


def test_masks_to_labels_covers_every_pixel_and_keeps_nested_masks():
    h, w = 20, 30
    big = np.zeros((h, w), bool)
    big[:, :15] = True
    small = np.zeros((h, w), bool)
    small[5:10, 5:10] = True  # inside big
    tiny = np.zeros((h, w), bool)
    tiny[0, 29] = True  # 1 pixel in the uncovered part
    lab = masks_to_labels([small, big, tiny], (h, w), min_area=4)
    assert_partition(lab, (h, w))
    assert int(lab.max()) + 1 == 3  # big-minus-small, small, background (tiny merged away)
    assert lab[7, 7] != lab[0, 0]  # the nested mask kept its own region
    assert lab[0, 29] == lab[19, 29]  # tiny merged into the background region


def test_max_regions_and_mask_batch_round_trip():
    lab = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)  # 16 blocks of 4x4
    out = merge_small_regions(lab, min_area=1, max_regions=5)
    assert_partition(out, (16, 16))
    assert int(out.max()) + 1 == 5
    masks = regions_to_masks(torch.from_numpy(out)).float()
    back = labels_from_mask_batch(masks)
    assert_partition(back, (16, 16))
    assert torch.equal(regions_to_masks(back).sum((1, 2)).sort().values, masks.sum((1, 2)).long().sort().values)


def test_colour_overlay_shape():
    lab = torch.zeros(12, 16, dtype=torch.long)
    lab[:, 8:] = 1
    over = colour_overlay(torch.rand(1, 12, 16), lab)
    assert over.shape == (3, 12, 16) and 0 <= float(over.min()) and float(over.max()) <= 1


# --- superpixels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixels_partition(pair, method):
    ir, vis = pair
    lab = superpixel_regions(ir, vis, method=method, n_segments=20)
    assert_partition(lab, tuple(ir.shape[-2:]))
    k = int(lab.max()) + 1
    assert 2 <= k <= 60
    min_area = ir.shape[-2] * ir.shape[-1] // (4 * 20)
    assert int(regions_to_masks(lab).sum((1, 2)).min()) >= min_area


def test_superpixel_fallback_is_logged(pair, caplog):
    ir, vis = pair
    with caplog.at_level(logging.INFO, logger="evafusion_core.regions"):
        lab = propose_regions(ir, vis, method="auto", sam=None, n_segments=16)
    assert_partition(lab, tuple(ir.shape[-2:]))
    assert any("superpixels" in r.message and "no SAM" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="needs a loaded SAM"):
        propose_regions(ir, vis, method="sam", sam=None)


# --- SAM ---------------------------------------------------------------------------------------------


def test_sam_automatic_masks_become_a_partition(pair, tiny_sam):
    ir, vis = pair
    # A random SAM's quality scores mean nothing: accept every mask, keep duplicates (NMS 1.0).
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    masks = sam_masks(tiny_sam, vis, **kw)
    assert masks and all(m.shape == tuple(ir.shape[-2:]) and m.dtype == bool for m in masks)
    lab = propose_regions(ir, vis, vis, method="sam", sam=tiny_sam, min_area=50, **kw)
    assert_partition(lab, tuple(ir.shape[-2:]))
    assert int(regions_to_masks(lab).sum((1, 2)).min()) >= 50  # small regions were merged
    with pytest.raises(ValueError, match="fused"):
        propose_regions(ir, vis, None, method="sam", sam=tiny_sam)


def test_sam_checkpoint_from_file_folder_and_hub_cache(tmp_path, monkeypatch):
    f = tmp_path / "ckpts" / OFFICIAL_FILES["vit_l"]
    f.parent.mkdir()
    f.write_bytes(b"x")
    assert resolve_sam_checkpoint(f, "vit_l") == f
    assert resolve_sam_checkpoint(f.parent, "vit_l") == f
    assert infer_model_type(f.name) == "vit_l"
    with pytest.raises(ModelLoadError, match="no vit_b SAM checkpoint in"):
        resolve_sam_checkpoint(f.parent, "vit_b")

    # A Hub cache laid out by hand, read through hf_hub_download offline.
    cache = tmp_path / "hub"
    snap = cache / "models--org--sam" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / OFFICIAL_FILES["vit_b"]).write_bytes(b"y")
    (cache / "models--org--sam" / "refs").mkdir()
    (cache / "models--org--sam" / "refs" / "main").write_text("a" * 40)
    got = resolve_sam_checkpoint("org/sam", "vit_b", cache_dir=cache, local_files_only=True)
    assert got.read_bytes() == b"y"
    with pytest.raises(ModelLoadError) as exc:
        resolve_sam_checkpoint("org/sam", "vit_h", cache_dir=cache, local_files_only=True)
    msg = str(exc.value)
    assert "org/sam" in msg and OFFICIAL_FILES["vit_h"] in msg and str(cache) in msg and "offline" in msg
    with pytest.raises(ModelLoadError, match="not an existing file"):
        resolve_sam_checkpoint(tmp_path / "missing.pth", "vit_b")
