"""Region proposals for region-level rewards: SAM automatic masks, or superpixels without SAM.

``propose_regions(ir, vis, fused=None, method=...)`` returns a label map LongTensor [H,W]
(labels 0..K-1, every pixel in exactly one region); ``regions_to_masks`` turns it into
boolean masks [K,H,W]. ``method="sam"`` needs a loaded SAM (:func:`load_sam`) and runs on the
fused image (or the visible one); ``method="superpixels"`` needs nothing; ``method="auto"``
uses SAM when one is given and otherwise falls back to superpixels, saying so in the log.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .labels import colour_overlay, labels_from_mask_batch, masks_to_labels, merge_small_regions, regions_to_masks
from .sam import (
    OFFICIAL_FILES,
    SAM_MODEL_TYPES,
    build_sam_from_config,
    infer_model_type,
    load_sam,
    resolve_sam_checkpoint,
    sam_masks,
    sam_regions,
)
from .superpixels import SUPERPIXEL_METHODS, superpixel_regions

log = logging.getLogger(__name__)

METHODS = ("auto", "sam", "superpixels")


def propose_regions(
    ir: torch.Tensor,
    vis: torch.Tensor,
    fused: torch.Tensor | None = None,
    method: str = "sam",
    *,
    sam: Any = None,
    sam_on: str = "fused",
    superpixel_method: str = "slic",
    n_segments: int = 48,
    min_area: int | None = None,
    max_regions: int | None = 64,
    **sam_kwargs: Any,
) -> torch.Tensor:
    """Regions of one IR/visible pair as a label map LongTensor [H,W] covering every pixel.

    ``ir``/``vis``/``fused`` are [C,H,W] or [1,C,H,W] in 0..1. ``method``:

    * ``"sam"``: SAM automatic masks on ``fused`` (``sam_on="fused"``, needs ``fused``) or on the
      visible image (``sam_on="vis"``); ``sam`` must be a loaded model, else an error.
    * ``"superpixels"``: SLIC/Felzenszwalb over IR + visible (``superpixel_method``, ``n_segments``).
    * ``"auto"``: SAM when ``sam`` is given, else superpixels, with a log line saying which.
    """
    if method not in METHODS:
        raise ValueError(f"unknown region method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "auto":
        if sam is None:
            log.info("regions: no SAM model given, using %s superpixels", superpixel_method)
            method = "superpixels"
        else:
            method = "sam"
    if method == "superpixels":
        return superpixel_regions(ir, vis, method=superpixel_method, n_segments=n_segments, min_area=min_area,
                                  max_regions=max_regions)
    if sam is None:
        raise ValueError(
            "method='sam' needs a loaded SAM model (load_sam(checkpoint)); pass method='superpixels' "
            "(or 'auto') to use superpixels instead"
        )
    if sam_on == "fused":
        if fused is None:
            raise ValueError("sam_on='fused' needs the fused image; pass fused= or sam_on='vis'")
        image = fused
    elif sam_on == "vis":
        image = vis
    else:
        raise ValueError(f"sam_on must be 'fused' or 'vis', got {sam_on!r}")
    return sam_regions(sam, image, min_area=min_area, max_regions=max_regions, **sam_kwargs)


__all__ = [
    "METHODS",
    "OFFICIAL_FILES",
    "SAM_MODEL_TYPES",
    "SUPERPIXEL_METHODS",
    "build_sam_from_config",
    "colour_overlay",
    "infer_model_type",
    "labels_from_mask_batch",
    "load_sam",
    "masks_to_labels",
    "merge_small_regions",
    "propose_regions",
    "regions_to_masks",
    "resolve_sam_checkpoint",
    "sam_masks",
    "sam_regions",
    "superpixel_regions",
]
