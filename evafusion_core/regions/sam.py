"""Segment Anything (the ``segment-anything`` package) as a region proposer.

* :func:`resolve_sam_checkpoint` finds a checkpoint from a ``.pth``/``.safetensors`` file, a
  folder, or a Hugging Face Hub repo id (``hf_hub_download`` of one named file; the local
  cache only when offline), and names every place it looked when it fails.
* :func:`load_sam` builds ``vit_b``/``vit_l``/``vit_h`` with the package's own builders and
  loads the weights strictly, without unpickling arbitrary objects (``weights_only=True``).
* :func:`build_sam_from_config` builds any SAM size from the package's modules (the tests
  use a tiny randomly initialised one, since no checkpoint can be downloaded here).
* :func:`sam_regions` runs ``SamAutomaticMaskGenerator`` on an image and turns its
  overlapping masks into a label map that covers every pixel (:func:`masks_to_labels`).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from .labels import masks_to_labels

log = logging.getLogger(__name__)

SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
#: The file names Meta publishes (also the names most Hub mirrors use).
OFFICIAL_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
_SUFFIXES = (".pth", ".pt", ".safetensors")


def infer_model_type(name: str, default: str = "vit_b") -> str:
    """``vit_b``/``vit_l``/``vit_h`` from a file name such as ``sam_vit_l_0b3195.pth``, else ``default``."""
    low = Path(name).name.lower().replace("-", "_")
    for t in SAM_MODEL_TYPES:
        if t in low:
            return t
    return default


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~")) and not Path(text).suffix


def _pick_in_folder(folder: Path, model_type: str, filename: str | None) -> Path:
    if filename:
        p = folder / filename
        if p.is_file():
            return p
        raise ModelLoadError(f"SAM checkpoint {filename!r} not found in {folder}")
    official = folder / OFFICIAL_FILES[model_type]
    if official.is_file():
        return official
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
    typed = [p for p in files if model_type in p.name.lower().replace("-", "_")]
    if len(typed) == 1:
        return typed[0]
    if len(files) == 1 and not any(t in files[0].name for t in SAM_MODEL_TYPES):
        return files[0]
    shown = ", ".join(p.name for p in files) or "no .pth/.safetensors files"
    raise ModelLoadError(
        f"no {model_type} SAM checkpoint in {folder} (looked for {OFFICIAL_FILES[model_type]} or one file whose name "
        f"contains {model_type!r}; found: {shown}); pass the file itself"
    )


def resolve_sam_checkpoint(
    source: str | os.PathLike,
    model_type: str = "vit_b",
    *,
    filename: str | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_dir: str | os.PathLike | None = None,
) -> Path:
    """A local path to a SAM checkpoint named by ``source``: a file, a folder holding one, or a Hub
    repo id (``filename`` defaults to Meta's name for ``model_type``). Local paths are checked
    first and never touch the network; ``HF_HUB_OFFLINE`` (or ``local_files_only``) restricts a
    Hub id to the local cache. With ``local_dir`` (e.g. ``models/sams``) a Hub file is looked for
    there first and downloaded there, not into the shared Hub cache. Raises
    :class:`ModelLoadError` naming where it looked."""
    if model_type not in SAM_MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model_type!r}; choose one of {', '.join(SAM_MODEL_TYPES)}")
    text = str(source).strip()
    if not text:
        raise ModelLoadError("no SAM checkpoint given (a .pth file, a folder or a Hub repo id)")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _pick_in_folder(path, model_type, filename)
    if not _looks_like_repo_id(text):
        raise ModelLoadError(
            f"SAM checkpoint {text!r} not found: not an existing file ({path.resolve()}), not a folder, "
            "and not a Hub repo id of the form org/name"
        )
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    name = filename or OFFICIAL_FILES[model_type]
    if local_dir is not None and (Path(local_dir) / name).is_file():
        return Path(local_dir) / name
    offline = constants.HF_HUB_OFFLINE if local_files_only is None else local_files_only
    kwargs: dict[str, Any] = {"revision": revision, "local_files_only": offline, "cache_dir": cache_dir}
    if local_dir is not None:
        kwargs["local_dir"] = str(local_dir)
    try:
        return Path(hf_hub_download(text, name, **kwargs))
    except (LocalEntryNotFoundError, HfHubHTTPError, FileNotFoundError, OSError, ValueError) as exc:
        where = local_dir or cache_dir or constants.HF_HUB_CACHE
        mode = "offline: only the local cache was searched" if offline else "download failed"
        raise ModelLoadError(
            f"SAM checkpoint {name!r} from Hub repo {text!r} could not be loaded ({mode}; cache {where}). "
            f"Download it by hand (https://huggingface.co/{text}/blob/main/{name}) into models/sams/ and pass "
            f"the file instead. Cause: {exc}"
        ) from exc


def build_sam_from_config(
    *,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...] | list[int],
    image_size: int = 1024,
    patch_size: int = 16,
    prompt_embed_dim: int = 256,
    window_size: int = 14,
    decoder_depth: int = 2,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
):
    """A randomly initialised ``segment_anything.modeling.Sam`` of any size, from the package's modules."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth, embed_dim=encoder_embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=encoder_num_heads, patch_size=patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(encoder_global_attn_indexes),
            window_size=window_size, out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim,
                                          num_heads=decoder_num_heads),
            transformer_dim=prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            return safetensors.torch.load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise ModelLoadError(f"{path}: cannot read SAM checkpoint ({exc})") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: not a SAM state dict (got {type(state).__name__})")
    return state


def load_sam(
    source: str | os.PathLike,
    model_type: str | None = None,
    *,
    device: str | torch.device = "cpu",
    **resolve_kwargs: Any,
):
    """A SAM model (eval mode, on ``device``) of ``model_type`` (inferred from the file name when
    None, else ``vit_b``) with the weights named by ``source`` (see :func:`resolve_sam_checkpoint`)."""
    from segment_anything import sam_model_registry

    mt = model_type or infer_model_type(str(source))
    path = resolve_sam_checkpoint(source, mt, **resolve_kwargs)
    if model_type is None:
        mt = infer_model_type(path.name, mt)
    sam = sam_model_registry[mt]()
    state = _read_state_dict(path)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        other = infer_model_type(path.name, "")
        hint = f" (the file name says {other})" if other and other != mt else ""
        raise ModelLoadError(f"{path}: weights do not fit SAM {mt}{hint}: {str(exc)[:400]}") from exc
    log.info("loaded SAM %s from %s", mt, path)
    sam.model_type = mt
    return sam.to(device).eval()


def to_sam_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[C,H,W]/[1,C,H,W] 0..1 tensor (grey promoted) or HWC uint8 array -> HWC uint8 RGB for SAM."""
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        if a.dtype != np.uint8:
            a = np.clip(np.round(a * 255.0 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(a[..., :3])
    t = image[0] if image.ndim == 4 else image
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t[:3].detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def sam_masks(
    sam,
    image: torch.Tensor | np.ndarray,
    *,
    points_per_side: int = 16,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.86,
    stability_score_thresh: float = 0.92,
    box_nms_thresh: float = 0.7,
    crop_n_layers: int = 0,
) -> list[np.ndarray]:
    """Binary masks [H,W] from ``SamAutomaticMaskGenerator`` (defaults a little laxer than Meta's,
    which were chosen for ViT-H on photos; IR/visible fusions are lower in contrast)."""
    from segment_anything import SamAutomaticMaskGenerator

    generator = SamAutomaticMaskGenerator(
        sam, points_per_side=points_per_side, points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh, box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers,
        output_mode="binary_mask",
    )
    records = generator.generate(to_sam_image(image))
    return [np.asarray(r["segmentation"], dtype=bool) for r in records]


def sam_regions(
    sam,
    image: torch.Tensor | np.ndarray,
    *,
    min_area: int | None = None,
    max_regions: int | None = 64,
    **generator_kwargs: Any,
) -> torch.Tensor:
    """Label map LongTensor [H,W] from SAM automatic masks on ``image`` (every pixel covered: pixels no
    mask covers form one background region; regions under ``min_area`` pixels, default 0.2% of the
    image, merge into their neighbour or the background)."""
    a = to_sam_image(image)
    h, w = a.shape[:2]
    masks = sam_masks(sam, a, **generator_kwargs)
    if min_area is None:
        min_area = max(1, (h * w) // 500)
    labels = masks_to_labels(masks, (h, w), min_area=min_area, max_regions=max_regions)
    log.debug("SAM: %d masks -> %d regions", len(masks), int(labels.max()) + 1)
    return torch.from_numpy(labels)
