"""Feedback as training data: export to the original human-feedback format, and tensors for training.

One image rated by several annotators becomes one row whose scores are the mean of their
latest ratings and whose heatmap is the mean of their artifact masks (an annotator who
drew none says "no artifacts"), which is how the original dataset pools its raters.
Rows are split by source pair, so one scene never lands in two splits.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..data.synthetic import stable_fraction
from ..io import resize_to
from .store import DIMENSIONS, FeedbackError, FeedbackStore


def split_of(source: str, dev_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """``train``, ``dev`` or ``test`` for a source pair: stable, and independent of the other pairs."""
    u = stable_fraction(source, seed)
    return "test" if u < test_fraction else "dev" if u < test_fraction + dev_fraction else "train"


def pooled_items(store: FeedbackStore, skip_bad: bool = False) -> list[dict[str, Any]]:
    """One entry per rated image: its image paths, source key, annotators, mean scores [5] and mask paths."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in store.ratings(skip_bad=skip_bad):
        groups[r["item"]].append(r)
    items = []
    for item, rs in groups.items():
        items.append({
            "item": item,
            "source": rs[0]["source"],
            "images": rs[0]["images"],
            "annotators": [r["annotator"] for r in rs],
            "scores": [sum(r["scores"][d] for r in rs) / len(rs) for d in DIMENSIONS],
            "masks": [r.get("mask") for r in rs],
        })
    return items


def _heatmap(store: FeedbackStore, masks: list[str | None], size: tuple[int, int]) -> torch.Tensor:
    heat = torch.zeros(1, *size)
    for m in masks:
        if m:
            heat += store.image(m, grey=True)
    return heat / len(masks)


def export_feedback_hf(
    store: FeedbackStore,
    out: str | os.PathLike,
    *,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
) -> dict[str, int]:
    """Write the ratings as a ``DatasetDict.save_to_disk`` folder in the original format; returns rows per split.

    Preferences have no place in that format; they stay in the feedback folder, which
    ``train-reward --feedback`` reads directly."""
    from ..data.hf_format import export_hf

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FeedbackError(f"{out} exists and is not empty: choose a new folder (nothing is overwritten)")
    items = pooled_items(store, skip_bad)
    if not items:
        raise FeedbackError(f"{store.root}: no ratings to export")
    splits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        fused = store.image(it["images"]["fused"])
        splits[split_of(it["source"], dev_fraction, test_fraction, seed)].append({
            "fused": fused,
            "ir": store.image(it["images"]["ir"], grey=True),
            "vis": store.image(it["images"]["vis"]),
            "heatmap": _heatmap(store, it["masks"], tuple(fused.shape[-2:])),
            "scores": it["scores"],
        })
    export_hf(splits, out)
    return {k: len(v) for k, v in splits.items()}


class FeedbackTrainingData:
    """Ratings and preferences of a feedback folder as tensors at the reward model's input size.

    Everything is loaded once (feedback folders are small next to the synthetic stream).
    ``samples`` hold fused/ir/vis/heatmap/scores like synthetic samples; ``pairs`` hold
    preference triples (a, b, ir, vis, target) with target 1 = A better, 0 = B better, 0.5 = tie.
    """

    def __init__(self, root: str | os.PathLike, size: int, skip_bad: bool = False) -> None:
        self.store = FeedbackStore(root)
        if not self.store.records_path.is_file():
            raise FeedbackError(f"{root}: not a feedback folder (no {self.store.records_path.name})")
        sq = (size, size)

        def img(rel: str, grey: bool = False) -> torch.Tensor:
            return resize_to(self.store.image(rel, grey=grey), sq).clamp(0, 1)

        self.samples = []
        #: Rated images with at least one drawn artifact mask (an image rated without one says "no artifacts").
        self.n_masked = 0
        for it in pooled_items(self.store, skip_bad):
            self.n_masked += any(it["masks"])
            fused = self.store.image(it["images"]["fused"])
            heat = _heatmap(self.store, it["masks"], tuple(fused.shape[-2:]))
            self.samples.append({
                "fused": resize_to(fused, sq).clamp(0, 1),
                "ir": img(it["images"]["ir"], grey=True),
                "vis": img(it["images"]["vis"]),
                "heatmap": resize_to(heat, sq).clamp(0, 1),
                "scores": torch.tensor(it["scores"], dtype=torch.float32),
            })
        target = {"A": 1.0, "B": 0.0, "tie": 0.5}
        self.pairs = [
            {"a": img(p["images"]["a"]), "b": img(p["images"]["b"]), "ir": img(p["images"]["ir"], grey=True),
             "vis": img(p["images"]["vis"]), "target": target[p["choice"]]}
            for p in self.store.preferences(skip_bad=skip_bad)
        ]
        if not self.samples and not self.pairs:
            raise FeedbackError(f"{root}: no ratings or preferences to train on")
