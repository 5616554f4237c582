"""The original EVAFusion human-feedback format: Hugging Face ``datasets`` folders.

A dataset is a ``DatasetDict.save_to_disk`` folder with splits ``train``, ``dev`` and
``test``; each row has images ``fused``, ``infrared``, ``visible``, a grey image
``artifact_heatmap`` and ``scores``, a dict with keys ``Thermal Retention``,
``Texture Preservation``, ``Artifacts``, ``Sharpness`` and ``Overall Score`` (1-5).

:class:`HFRewardDataset` reads a split as tensors (the reward model's naming: the last
dimension is ``Overall``); :func:`export_hf` writes that exact format from tensors or
arrays, for ``evafusion feedback export`` and for tests. ``datasets`` is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EvaFusionError

SPLITS = ("train", "dev", "test")
#: Score keys as the original dataset spells them, in the reward model's DIMENSIONS order.
SCORE_KEYS = ("Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall Score")
IMAGE_FIELDS = ("fused", "infrared", "visible", "artifact_heatmap")


def _datasets():
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a declared dependency
        raise EvaFusionError("this format needs the Hugging Face `datasets` package: pip install datasets") from exc
    return datasets


def features():
    """The ``datasets.Features`` of the format."""
    ds = _datasets()
    return ds.Features(
        {
            "fused": ds.Image(),
            "infrared": ds.Image(),
            "visible": ds.Image(),
            "artifact_heatmap": ds.Image(),
            "scores": {k: ds.Value("float32") for k in SCORE_KEYS},
        }
    )


def is_hf_folder(path: str | os.PathLike) -> bool:
    """True for a ``save_to_disk`` folder (a DatasetDict or a single split)."""
    p = Path(path)
    return (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file()


def _pil_to_tensor(img, grey: bool = False) -> torch.Tensor:
    from ..colour import luma

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    else:
        img = img.convert("L") if img.mode in ("L", "1", "LA") else img.convert("RGB")
        a = np.asarray(img, dtype=np.float64) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    if grey and t.shape[0] == 3:
        t = luma(t)
    return t.contiguous()


def _to_pil(x: Any, grey: bool = False):
    """A tensor [C,H,W] / array [H,W(,C)] in 0..1 or uint8, or a PIL image -> PIL image (grey by BT.601 luma)."""
    from PIL import Image

    from ..colour import luma
    from ..io import to_uint8

    if isinstance(x, Image.Image):
        return x.convert("L") if grey else x
    if not isinstance(x, torch.Tensor):
        a = np.asarray(x)
        scale = 255.0 if a.dtype == np.uint8 else 1.0
        t = torch.from_numpy(a.astype(np.float32) / scale)
        x = t.unsqueeze(0) if t.ndim == 2 else t[..., :3].permute(2, 0, 1)
    x = x if x.ndim == 3 else x.unsqueeze(0)
    if grey:
        x = luma(x)
    return Image.fromarray(to_uint8(x))


class HFRewardDataset(torch.utils.data.Dataset):
    """One split as a torch dataset: dicts of ``fused`` [C,H,W], ``ir`` [1,H,W], ``vis`` [C,H,W],
    ``heatmap`` [1,H,W] (resized to the fused size) and ``scores`` [5] on 1..5 (reward order)."""

    def __init__(self, path: str | os.PathLike, split: str = "train") -> None:
        ds = _datasets()
        p = Path(path)
        if not p.is_dir():
            raise EvaFusionError(f"{p}: HF-format dataset folder not found")
        loaded = ds.load_from_disk(str(p))
        if isinstance(loaded, ds.DatasetDict):
            if split not in loaded:
                raise EvaFusionError(f"{p}: no split {split!r}; it has {', '.join(loaded)}")
            loaded = loaded[split]
        missing = [f for f in (*IMAGE_FIELDS, "scores") if f not in loaded.column_names]
        if missing:
            raise EvaFusionError(f"{p}: not the human-feedback format, missing fields {', '.join(missing)}")
        self.data = loaded
        self.split = split

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from ..io import resize_to

        row = self.data[int(index)]
        fused = _pil_to_tensor(row["fused"])
        heat = _pil_to_tensor(row["artifact_heatmap"], grey=True)
        if heat.shape[-2:] != fused.shape[-2:]:
            heat = resize_to(heat, tuple(fused.shape[-2:])).clamp(0, 1)
        scores = torch.tensor([float(row["scores"][k]) for k in SCORE_KEYS], dtype=torch.float32)
        return {
            "fused": fused,
            "ir": _pil_to_tensor(row["infrared"], grey=True),
            "vis": _pil_to_tensor(row["visible"]),
            "heatmap": heat,
            "scores": scores,
            "index": int(index),
        }


def load_hf(path: str | os.PathLike, split: str = "test") -> HFRewardDataset:
    return HFRewardDataset(path, split)


def _row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Accept our naming (fused/ir/vis/heatmap, scores as [5] or a dict) or the original one."""
    get = lambda *names: next((rec[n] for n in names if n in rec), None)
    fused, ir, vis = get("fused"), get("infrared", "ir"), get("visible", "vis")
    heat = get("artifact_heatmap", "heatmap")
    if fused is None or ir is None or vis is None:
        raise EvaFusionError("each record needs fused, ir/infrared and vis/visible images")
    if heat is None:
        heat = torch.zeros(1, *np.asarray(_to_pil(fused)).shape[:2])
    scores = rec["scores"]
    if isinstance(scores, Mapping):
        vals = [float(scores[k] if k in scores else scores["Overall"]) for k in SCORE_KEYS]
    else:
        vals = [float(v) for v in (scores.tolist() if hasattr(scores, "tolist") else scores)]
        if len(vals) != len(SCORE_KEYS):
            raise EvaFusionError(f"scores must have {len(SCORE_KEYS)} values, got {len(vals)}")
    if not all(1.0 <= v <= 5.0 for v in vals):
        raise EvaFusionError(f"scores must lie in 1..5, got {vals}")
    return {
        "fused": _to_pil(fused),
        "infrared": _to_pil(ir, grey=True),
        "visible": _to_pil(vis),
        "artifact_heatmap": _to_pil(heat, grey=True),
        "scores": dict(zip(SCORE_KEYS, vals)),
    }


def export_hf(splits: Mapping[str, Iterable[Mapping[str, Any]]], out: str | os.PathLike) -> Path:
    """Write records per split (``train``/``dev``/``test``) as a ``DatasetDict.save_to_disk`` folder.

    A record holds ``fused``, ``ir`` (or ``infrared``), ``vis`` (or ``visible``), optional
    ``heatmap`` (or ``artifact_heatmap``; empty when absent) and ``scores``: five values in
    reward order, or a dict keyed like the original (``Overall Score``) or by DIMENSIONS.
    Images may be tensors [C,H,W] in 0..1, arrays or PIL images.
    """
    ds = _datasets()
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise EvaFusionError(f"unknown split(s) {', '.join(unknown)}; the format has {', '.join(SPLITS)}")
    feats = features()
    built = {}
    for name in SPLITS:
        rows = [_row(r) for r in splits.get(name, [])]
        if rows:  # an empty split cannot be read back by load_from_disk: leave it out
            built[name] = ds.Dataset.from_dict({k: [r[k] for r in rows] for k in feats}, features=feats)
    if not built:
        raise EvaFusionError("nothing to export: every split is empty")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.DatasetDict(built).save_to_disk(str(out))
    return out
