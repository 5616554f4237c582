"""Region nodes: load a Segment Anything model, turn images into region masks (SAM or superpixels)."""

from __future__ import annotations

import logging
import os

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..evafusion_core.regions import (
    OFFICIAL_FILES,
    SAM_MODEL_TYPES,
    SUPERPIXEL_METHODS,
    colour_overlay,
    infer_model_type,
    load_sam,
    propose_regions,
    regions_to_masks,
)
from ._common import MODEL_FOLDER, ModelHandle, pick_device, to_bchw, to_image, to_mask

log = logging.getLogger("evafusion")

SamModel = io.Custom("SAM_MODEL")
CATEGORY = "EVAFusion/regions"
SAM_FOLDER = "sams"  # the folder name other SAM packs use too, so one download serves all
_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")

if SAM_FOLDER not in folder_paths.folder_names_and_paths:
    # Set only if absent, so an extra_model_paths.yaml entry for "sams" keeps working.
    folder_paths.add_model_folder_path(SAM_FOLDER, os.path.join(folder_paths.models_dir, SAM_FOLDER), is_default=True)
folder_paths.folder_names_and_paths[SAM_FOLDER][1].update(_WEIGHT_SUFFIXES)


def _checkpoint_choices() -> list[str]:
    """``sams/<file>`` for every weight file in models/sams/, ``evafusion/<file>`` for SAM files in
    models/evafusion/ (only names that mention ``sam``: that folder also holds DCEvo checkpoints)."""
    found = [f"{SAM_FOLDER}/{n}" for n in folder_paths.get_filename_list(SAM_FOLDER) if n.endswith(_WEIGHT_SUFFIXES)]
    found += [f"{MODEL_FOLDER}/{n}" for n in folder_paths.get_filename_list(MODEL_FOLDER)
              if n.endswith(_WEIGHT_SUFFIXES) and "sam" in os.path.basename(n).lower()]
    return sorted(found) or ["(none found: put a SAM .pth in models/sams/)"]


def _resolve_choice(choice: str) -> str | None:
    folder, _, name = choice.partition("/")
    if folder not in (SAM_FOLDER, MODEL_FOLDER) or not name:
        return None
    return folder_paths.get_full_path(folder, name)


class SamHolder(torch.nn.Module):
    """Holds a ``Sam`` for ComfyUI's ModelPatcher, which assigns ``model.device`` (read-only on ``Sam``)."""

    def __init__(self, sam: torch.nn.Module) -> None:
        super().__init__()
        self.sam = sam
        self.device = torch.device("cpu")


def _sam_from(payload) -> tuple[torch.nn.Module, ModelHandle | None]:
    """Accept our ModelHandle, or a bare segment_anything ``Sam`` (what other packs put on SAM_MODEL)."""
    if isinstance(payload, ModelHandle):
        held = payload.acquire()
        return getattr(held, "sam", held), payload
    if hasattr(payload, "image_encoder") and hasattr(payload, "mask_decoder"):
        return payload, None
    raise ValueError(f"SAM_MODEL input holds a {type(payload).__name__}, not a Segment Anything model")


class SAMModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_SAMModelLoader",
            display_name="SAM Model Loader",
            category=CATEGORY,
            description="Load Segment Anything (vit_b / vit_l / vit_h) from models/sams/ or models/evafusion/, or "
            "download one named file from a Hugging Face Hub repo into models/sams/ (the local file is used first; "
            "HF_HUB_OFFLINE is honoured). Weights are read without unpickling code.",
            inputs=[
                io.Combo.Input("model_type", options=["auto", *SAM_MODEL_TYPES], default="auto",
                               tooltip="SAM size; auto reads it from the file name (sam_vit_b_...), else vit_b."),
                io.Combo.Input("checkpoint", options=_checkpoint_choices(),
                               tooltip="A SAM checkpoint found in models/sams/ or models/evafusion/."),
                io.String.Input("hub_repo_id", default="", optional=True,
                                tooltip="org/name on the Hugging Face Hub; overrides 'checkpoint' when set."),
                io.String.Input("hub_filename", default="", optional=True,
                                tooltip="File in that repo; empty = Meta's name for the type "
                                f"({', '.join(OFFICIAL_FILES.values())})."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto",
                               tooltip="auto follows ComfyUI's device choice."),
                io.Boolean.Input("keep_loaded", default=True,
                                 tooltip="Keep SAM on the GPU between runs; off frees memory after each use."),
            ],
            outputs=[SamModel.Output("sam_model", tooltip="The loaded Segment Anything model.")],
        )

    @classmethod
    def execute(cls, model_type, checkpoint, device, keep_loaded, hub_repo_id="", hub_filename=""):
        repo = hub_repo_id.strip()
        if repo:
            source, local_dir = repo, folder_paths.get_folder_paths(SAM_FOLDER)[0]
            kind = None if model_type == "auto" else model_type
            kind = kind or infer_model_type(hub_filename or "", "vit_b")
            sam = load_sam(source, kind, filename=hub_filename.strip() or None, local_dir=local_dir)
            name = f"{repo}/{hub_filename.strip() or OFFICIAL_FILES[kind]}"
        else:
            path = _resolve_choice(checkpoint)
            if path is None:
                raise ValueError(
                    f"no SAM checkpoint selected ({checkpoint!r}): put sam_vit_b_01ec64.pth (or vit_l / vit_h) in "
                    f"{folder_paths.get_folder_paths(SAM_FOLDER)[0]}, or set hub_repo_id"
                )
            sam = load_sam(path, None if model_type == "auto" else model_type)
            name = os.path.basename(path)
        dev = pick_device(device)
        handle = ModelHandle.wrap(SamHolder(sam), name, dev, torch.float32, keep_loaded)
        handle.info["model_type"] = getattr(sam, "model_type", model_type)
        return io.NodeOutput(handle)


class SAMRegions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_SAMRegions",
            display_name="Regions (SAM / Superpixels)",
            category=CATEGORY,
            description="Split each image into regions that cover every pixel: SAM automatic masks when a SAM model "
            "is connected, otherwise superpixels over IR + visible (the log says which). Outputs one mask per "
            "region (regions of all images in the batch, in order) and a coloured overlay per image.",
            inputs=[
                io.Image.Input("ir", tooltip="Infrared batch [B,H,W,3]."),
                io.Image.Input("vis", tooltip="Visible batch [B,H,W,3], same size as IR."),
                SamModel.Input("sam_model", optional=True,
                               tooltip="From SAM Model Loader; leave unconnected to use superpixels."),
                io.Image.Input("fused", optional=True,
                               tooltip="Fused batch; SAM runs on it when 'sam_on' is fused (else on the visible)."),
                io.Combo.Input("sam_on", options=["fused", "vis"], default="fused",
                               tooltip="Which image SAM segments (fused needs the fused input)."),
                io.Int.Input("points_per_side", default=16, min=2, max=64,
                             tooltip="SAM prompt grid per side (more = finer regions, slower)."),
                io.Float.Input("pred_iou_thresh", default=0.86, min=0.0, max=1.0, step=0.01,
                               tooltip="SAM: drop masks whose predicted quality is below this."),
                io.Float.Input("stability_score_thresh", default=0.92, min=0.0, max=1.0, step=0.01,
                               tooltip="SAM: drop masks that change under small threshold shifts."),
                io.Combo.Input("superpixel_method", options=list(SUPERPIXEL_METHODS), default="slic",
                               tooltip="Superpixel algorithm used without SAM."),
                io.Int.Input("n_segments", default=24, min=2, max=1000,
                             tooltip="Superpixels: about how many regions."),
                io.Int.Input("min_area", default=0, min=0, max=1_000_000,
                             tooltip="Regions smaller than this many pixels merge into a neighbour (0 = automatic)."),
                io.Int.Input("max_regions", default=32, min=1, max=1000,
                             tooltip="At most this many regions per image (the smallest merge first)."),
            ],
            outputs=[
                io.Mask.Output("masks", tooltip="One mask per region [N,H,W], images one after another."),
                io.Image.Output("overlay", tooltip="Each image with its regions tinted, [B,H,W,3]."),
                io.Int.Output("count", tooltip="Number of regions (all images)."),
            ],
        )

    @classmethod
    def execute(cls, ir, vis, sam_on, points_per_side, pred_iou_thresh, stability_score_thresh, superpixel_method,
                n_segments, min_area, max_regions, sam_model=None, fused=None):
        a, b = to_bchw(ir, "ir"), to_bchw(vis, "vis")
        f = to_bchw(fused, "fused") if fused is not None else None
        if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
            raise ValueError(f"IR {tuple(ir.shape)} and visible {tuple(vis.shape)} batches must match")
        if f is not None and f.shape[-2:] != a.shape[-2:]:
            raise ValueError(f"fused {tuple(fused.shape)} must have the IR/visible size")
        sam, handle = (None, None) if sam_model is None else _sam_from(sam_model)
        if sam is None:
            log.info("EVAF_SAMRegions: no SAM model connected, using %s superpixels over IR + visible",
                     superpixel_method)
        elif sam_on == "fused" and f is None:
            raise ValueError("sam_on is 'fused' but no fused image is connected; connect one or choose 'vis'")
        bar = comfy.utils.ProgressBar(a.shape[0])
        masks, overlays = [], []
        try:
            for i in range(a.shape[0]):
                fi = None if f is None else f[i if f.shape[0] > 1 else 0]
                labels = propose_regions(
                    a[i], b[i], fi, "sam" if sam is not None else "superpixels", sam=sam, sam_on=sam_on,
                    superpixel_method=superpixel_method, n_segments=n_segments, min_area=min_area or None,
                    max_regions=max_regions,
                    **({"points_per_side": points_per_side, "pred_iou_thresh": pred_iou_thresh,
                        "stability_score_thresh": stability_score_thresh} if sam is not None else {}),
                )
                masks.append(regions_to_masks(labels).float())
                overlays.append(colour_overlay(fi if fi is not None else b[i], labels))
                bar.update(1)
        finally:
            if handle is not None:
                handle.release()
        out_masks = to_mask(torch.cat(masks))
        overlay = to_image(torch.stack(overlays))
        mm.soft_empty_cache()
        return io.NodeOutput(out_masks, overlay, int(out_masks.shape[0]), ui=ui.PreviewImage(overlay, cls=cls))


NODES = [SAMModelLoader, SAMRegions]
