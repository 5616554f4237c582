"""Fusion nodes: load IR/visible pairs, load a fusion model, fuse."""

from __future__ import annotations

import logging
import os
from functools import partial

import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..evafusion_core.errors import EvaFusionError
from ..evafusion_core.hub import bundled_names, load_fusion_model
from ..evafusion_core.inference import check_pair_batch, fuse
from ..evafusion_core.io import NORMALISATIONS, HighBitDepth, find_pairs, load_pair, resize_to
from ..evafusion_core.models import BASELINES
from ._common import ModelHandle, load_handle, loader_inputs, model_choices, to_bchw, to_image

log = logging.getLogger(__name__)

FusionModel = io.Custom("FUSION_MODEL")
CATEGORY = "EVAFusion"


def _input_files() -> list[str]:
    d = folder_paths.get_input_directory()
    return sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))) if os.path.isdir(d) else []


def _input_path(choice: str, override: str) -> str:
    if override.strip():
        return override.strip()
    return folder_paths.get_annotated_filepath(choice)


class LoadIRVisPair(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = _input_files()
        return io.Schema(
            node_id="EVAF_LoadIRVisPair",
            display_name="Load IR/VIS Pair",
            category=f"{CATEGORY}/loaders",
            description="Load an infrared and a visible image. 16-bit thermal images are normalised "
            "(percentiles by default), not truncated to 8 bits as core Load Image does.",
            inputs=[
                io.Combo.Input("ir_image", options=files, upload=io.UploadType.image,
                               tooltip="Infrared image from the ComfyUI input folder (8 or 16 bit)."),
                io.Combo.Input("vis_image", options=files, upload=io.UploadType.image,
                               tooltip="Visible image from the ComfyUI input folder."),
                io.String.Input("ir_path", default="", optional=True,
                                tooltip="Absolute path to the IR image; overrides ir_image when set."),
                io.String.Input("vis_path", default="", optional=True,
                                tooltip="Absolute path to the visible image; overrides vis_image when set."),
                io.Combo.Input("normalise", options=list(NORMALISATIONS), default="percentile", optional=True,
                               tooltip="How 16-bit data maps to 0..1: robust percentiles, min-max, or full range."),
                io.Boolean.Input("resize", default=False, optional=True,
                                 tooltip="Resize IR to the visible size instead of failing on a size mismatch."),
            ],
            outputs=[
                io.Image.Output("ir", tooltip="Infrared image as 3-channel grey IMAGE."),
                io.Image.Output("vis", tooltip="Visible image IMAGE."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, ir_image, vis_image, ir_path="", vis_path="", **kwargs):
        # Re-run when a file changes on disk, not on every queue.
        paths = [_input_path(ir_image, ir_path), _input_path(vis_image, vis_path)]
        return tuple((p, os.path.getmtime(p)) if os.path.exists(p) else (p, None) for p in paths)

    @classmethod
    def execute(cls, ir_image, vis_image, ir_path="", vis_path="", normalise="percentile", resize=False):
        ir, vis = load_pair(_input_path(ir_image, ir_path), _input_path(vis_image, vis_path), resize=resize,
                            high_bit=HighBitDepth(normalise))
        return io.NodeOutput(to_image(ir[None]), to_image(vis[None]))


class IRVisFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_IRVisFromImages",
            display_name="IR/VIS From Images",
            category=f"{CATEGORY}/loaders",
            description="Use two IMAGEs (e.g. from core Load Image) as an IR/visible pair; checks that "
            "batch sizes and sizes match and turns the IR image grey.",
            inputs=[
                io.Image.Input("ir", tooltip="Infrared image batch."),
                io.Image.Input("vis", tooltip="Visible image batch."),
                io.Boolean.Input("resize", default=False, tooltip="Resize IR to the visible size if they differ."),
            ],
            outputs=[
                io.Image.Output("ir_out", display_name="ir", tooltip="Infrared batch as 3-channel grey."),
                io.Image.Output("vis_out", display_name="vis", tooltip="Visible batch, checked against IR."),
            ],
        )

    @classmethod
    def execute(cls, ir, vis, resize):
        from ..evafusion_core.colour import luma

        a, b = luma(to_bchw(ir, "ir")), to_bchw(vis, "vis")
        if resize and a.shape[-2:] != b.shape[-2:]:
            a = resize_to(a, tuple(b.shape[-2:]))
        if a.shape[0] == 1 and b.shape[0] > 1:
            a = a.expand(b.shape[0], -1, -1, -1)
        check_pair_batch(a, b)
        return io.NodeOutput(to_image(a), to_image(b))


class FusionModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_FusionModelLoader",
            display_name="Fusion Model Loader",
            category=f"{CATEGORY}/loaders",
            description="Load a fusion network: a bundled model, a baseline rule, a folder or DCEvo .pth "
            "in models/evafusion/, or a Hugging Face Hub repo id (offline-safe: the local cache is used first).",
            inputs=[
                io.Combo.Input("model", options=model_choices(bundled_names("fusion") + list(BASELINES)),
                               default="light",
                               tooltip="Bundled (light keeps warm targets as bright as the IR image shows them), "
                               "baseline or models/evafusion/ entry."),
                *loader_inputs(),
                io.Int.Input("work_size", default=0, min=0, max=8192, step=8, optional=True,
                             tooltip="light only: fuse frames larger than this (long side, e.g. 640) at this size "
                             "and add the full-resolution detail back: faster on HD frames, as sharp. "
                             "0 keeps the model's own setting (off for the bundled light)."),
            ],
            outputs=[FusionModel.Output("fusion_model", display_name="model", tooltip="The loaded fusion network.")],
        )

    @classmethod
    def execute(cls, model, device, precision, keep_loaded, hub_repo_id="", work_size=0):
        load = partial(load_fusion_model, work_size=work_size) if work_size else load_fusion_model
        return io.NodeOutput(load_handle(load, model, hub_repo_id, device, precision, keep_loaded))


class Fuse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_Fuse",
            display_name="Fuse IR + VIS",
            category=f"{CATEGORY}/fusion",
            description="Fuse infrared and visible image batches; colour comes from the visible image.",
            inputs=[
                FusionModel.Input("model", tooltip="From Fusion Model Loader."),
                io.Image.Input("ir", tooltip="Infrared batch [B,H,W,3]."),
                io.Image.Input("vis", tooltip="Visible batch [B,H,W,3], same batch size and size as IR."),
                io.Int.Input("tile", default=0, min=0, max=8192, step=64,
                             tooltip="Fuse in tiles of this size to bound memory (0 = whole image)."),
            ],
            outputs=[io.Image.Output("fused", tooltip="Fused batch [B,H,W,3].")],
        )

    @classmethod
    def execute(cls, model: ModelHandle, ir, vis, tile):
        a, b = to_bchw(ir, "ir"), to_bchw(vis, "vis")
        check_pair_batch(a, b)
        net = model.acquire()
        bar = comfy.utils.ProgressBar(a.shape[0])
        try:
            out = fuse(net, a, b, tile=tile or None, batch_size=1, dtype=model.dtype, on_batch=bar.update)
        finally:
            model.release()
        return io.NodeOutput(to_image(out))


class PairFolderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_PairFolderLoader",
            display_name="Load IR/VIS Folder",
            category=f"{CATEGORY}/loaders",
            description="Load pairs from a folder with ir/ and vi/ subfolders (matched by file name) as "
            "batches, for evaluation and batch fine-tuning. Pairs are resized to a common size.",
            inputs=[
                io.String.Input("folder", default="",
                                tooltip="Folder holding ir/ and vi/ (absolute, or relative to the input folder)."),
                io.Int.Input("max_pairs", default=0, min=0, max=100000, tooltip="0 loads every pair."),
                io.Int.Input("width", default=0, min=0, max=8192, tooltip="Common width (0 = first pair's)."),
                io.Int.Input("height", default=0, min=0, max=8192, tooltip="Common height (0 = first pair's)."),
                io.Int.Input("start", default=0, min=0, max=100000, optional=True,
                             tooltip="First pair to load (0-based, in name order); with max_pairs 1 it steps "
                             "through the folder one pair at a time, e.g. for rating."),
                io.Boolean.Input("skip_unreadable", default=False, optional=True,
                                 tooltip="Off: stop at the first missing, corrupt or NaN file, naming it. On: "
                                 "leave such pairs out, list them in the log, and go on with the rest."),
            ],
            outputs=[
                io.Image.Output("ir"),
                io.Image.Output("vis"),
                io.String.Output("names", tooltip="Pair names (file stems), one per line."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, **kwargs):
        root = cls._root(folder)
        return tuple(sorted((p.name, p.stat().st_mtime) for d in ("ir", "vi") if (root / d).is_dir()
                            for p in (root / d).iterdir()))

    @staticmethod
    def _root(folder: str):
        from pathlib import Path

        p = Path(folder.strip())
        return p if p.is_absolute() else Path(folder_paths.get_input_directory()) / p

    @classmethod
    def execute(cls, folder, max_pairs, width, height, start=0, skip_unreadable=False):
        root = cls._root(folder)
        pairs = find_pairs(root / "ir", root / "vi")
        if start >= len(pairs):
            raise ValueError(f"{root}: start {start} is past the last pair (the folder has {len(pairs)} pairs, "
                             f"numbered 0 to {len(pairs) - 1})")
        pairs = pairs[start : start + max_pairs] if max_pairs else pairs[start:]
        bar = comfy.utils.ProgressBar(len(pairs))
        irs, viss, names, skipped = [], [], [], []
        size = None
        for stem, (a, b) in pairs:
            bar.update(1)
            try:
                ir, vis = load_pair(a, b, resize=True)
            except EvaFusionError as exc:
                if not skip_unreadable:
                    raise
                skipped.append(f"{stem}: {exc}")
                continue
            size = size or ((height, width) if width and height else tuple(vis.shape[-2:]))
            irs.append(resize_to(ir, size))
            viss.append(resize_to(vis.expand(3, -1, -1), size))
            names.append(stem)
        listing = "\n  ".join(skipped)
        if skipped:
            log.warning("Load IR/VIS Folder: left out %d unreadable pair(s):\n  %s", len(skipped), listing)
        if not irs:
            raise ValueError(f"{root}: none of the {len(pairs)} selected pairs could be read:\n  {listing}")
        return io.NodeOutput(to_image(torch.stack(irs)), to_image(torch.stack(viss)), "\n".join(names))


NODES = [LoadIRVisPair, IRVisFromImages, FusionModelLoader, Fuse, PairFolderLoader]
