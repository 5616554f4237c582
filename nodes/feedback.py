"""Feedback nodes: people rate fused images and compare fusions; the records train the reward model.

A rating needs a person to have seen the image first, but a ComfyUI node runs in the same
queue that makes the image. So in "preview first" mode a node shows a new image and records
nothing; the next queue (upstream nodes come from the cache, only this node runs again)
records the scores set meanwhile. Queuing again without changes records nothing; changing
a score records a new version. "record now" writes at once, for scripted runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..evafusion_core.feedback import FeedbackStore, feedback_stats, format_stats, item_hash
from ..evafusion_core.io import side_by_side
from ._common import to_bchw, to_image

CATEGORY = "EVAFusion/feedback"
MODES = ["preview first", "record now"]
PREFERENCES = {"A is better": "A", "B is better": "B", "about the same": "tie"}

#: Per node (its id in the graph): the image it last showed, so "preview first" knows what was seen.
_shown: dict[str, str] = {}


def _dataset_input() -> io.String.Input:
    return io.String.Input("dataset", default="evafusion_feedback",
                           tooltip="Feedback folder: absolute, or relative to ComfyUI's output folder. "
                           "Several queues (and the evafusion CLI) can write to it at once.")


def _common_inputs() -> list:
    return [
        io.String.Input("annotator", default="", tooltip="Your name: ratings are kept per annotator."),
        _dataset_input(),
        io.Combo.Input("mode", options=MODES, default=MODES[0],
                       tooltip="preview first: a new image is only shown; queue again to record what you set. "
                       "record now: write at once (scripted rating)."),
    ]


def _store(dataset: str) -> FeedbackStore:
    p = Path(dataset.strip() or "evafusion_feedback").expanduser()
    return FeedbackStore(p if p.is_absolute() else Path(folder_paths.get_output_directory()) / p)


def _one(image, what: str):
    """IMAGE -> one [C,H,W] image; a batch is refused because one set of scores cannot rate several images."""
    x = to_bchw(image, what)
    if x.shape[0] != 1:
        raise ValueError(f"{what}: a batch of {x.shape[0]} images; rating takes one image at a time "
                         "(set max_pairs to 1 on Load IR/VIS Folder and step with start)")
    return x[0]


def _slider(name: str, tooltip: str) -> io.Int.Input:
    return io.Int.Input(name, default=3, min=1, max=5, step=1, display_mode=io.NumberDisplay.slider, tooltip=tooltip)


def _seen(uid: str, key: str, mode: str) -> bool:
    """True when this node may record ``key`` now: it was shown before, or the mode records at once."""
    seen = _shown.get(uid) == key
    _shown[uid] = key
    return seen or mode == "record now"


def _output(cls, status: str, preview) -> io.NodeOutput:
    image = to_image(preview[None])
    return io.NodeOutput(status, ui={**ui.PreviewImage(image, cls=cls).as_dict(), **ui.PreviewText(status).as_dict()})


class RateFusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_RateFusion",
            display_name="Rate Fusion",
            category=CATEGORY,
            description="Rate a fused image 1-5 on five dimensions, optionally marking artifacts with a mask, "
            "into a feedback folder that trains the reward model. Shows IR, visible and fused side by side.",
            is_output_node=True,
            inputs=[
                io.Image.Input("fused", tooltip="The fused image to rate (one image)."),
                io.Image.Input("ir", tooltip="Its infrared source."),
                io.Image.Input("vis", tooltip="Its visible source."),
                _slider("thermal_retention", "Are hot targets as clear as in the IR image? 5 = fully."),
                _slider("texture_preservation", "Is the visible detail kept? 5 = fully."),
                _slider("artifacts", "Halos, ghosts, noise, blocks, stripes... 5 = none at all."),
                _slider("sharpness", "5 = crisp edges, 1 = blurred."),
                _slider("overall", "Your overall judgement."),
                *_common_inputs(),
                io.Mask.Input("artifact_mask", optional=True,
                              tooltip="Where you saw artifacts (white): paint it in the mask editor of a "
                              "Load Image node holding the fused image."),
                io.String.Input("model_name", default="", optional=True,
                                tooltip="The fusion model that made the image (kept with the rating)."),
                io.String.Input("note", default="", multiline=True, optional=True, tooltip="Free comment."),
            ],
            outputs=[io.String.Output("status", tooltip="What was recorded (or why nothing was).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")  # never cached: whether to record depends on what was shown before

    @classmethod
    def execute(cls, fused, ir, vis, thermal_retention, texture_preservation, artifacts, sharpness, overall,
                annotator, dataset, mode, artifact_mask=None, model_name="", note=""):
        f, a, b = _one(fused, "fused"), _one(ir, "ir"), _one(vis, "vis")
        store = _store(dataset)
        preview = side_by_side([a, b, f], ["IR", "visible", "fused"])
        if not _seen(str(cls.hidden.unique_id), item_hash(f, a, b), mode):
            return _output(cls, "New image: look, set the scores, then queue again to record them.", preview)
        mask = artifact_mask[0] if artifact_mask is not None else None
        scores = [thermal_retention, texture_preservation, artifacts, sharpness, overall]
        rec = store.add_rating(f, a, b, scores, annotator=annotator, mask=mask, model=model_name, note=note,
                               only_if_changed=True)
        if rec is None:
            status = f"Already recorded with these scores for {annotator.strip()}: change a score to re-rate."
        else:
            status = f"Recorded version {rec['version']} by {rec['annotator']} in {store.root}."
        return _output(cls, status, preview)


class CompareFusions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_CompareFusions",
            display_name="Compare Fusions",
            category=CATEGORY,
            description="Say which of two fusions of the same pair is better (and why); the preference trains "
            "the reward model through a ranking loss. Shows A and B side by side.",
            is_output_node=True,
            inputs=[
                io.Image.Input("fused_a", tooltip="Fusion A (one image)."),
                io.Image.Input("fused_b", tooltip="Fusion B of the same pair."),
                io.Image.Input("ir", tooltip="The infrared source."),
                io.Image.Input("vis", tooltip="The visible source."),
                io.Combo.Input("preference", options=list(PREFERENCES), default="about the same",
                               tooltip="Which fusion is better overall."),
                *_common_inputs(),
                io.String.Input("reason", default="", multiline=True, optional=True,
                                tooltip="Why, in a few words (kept with the preference)."),
                io.String.Input("model_a", default="", optional=True, tooltip="Name of the model behind A."),
                io.String.Input("model_b", default="", optional=True, tooltip="Name of the model behind B."),
            ],
            outputs=[io.String.Output("status", tooltip="What was recorded (or why nothing was).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")

    @classmethod
    def execute(cls, fused_a, fused_b, ir, vis, preference, annotator, dataset, mode, reason="", model_a="",
                model_b=""):
        fa, fb = _one(fused_a, "fused_a"), _one(fused_b, "fused_b")
        a, b = _one(ir, "ir"), _one(vis, "vis")
        store = _store(dataset)
        preview = side_by_side([fa, fb], [f"A {model_a}".strip(), f"B {model_b}".strip()])
        key = item_hash(fa, a, b) + item_hash(fb, a, b)
        if not _seen(str(cls.hidden.unique_id), key, mode):
            return _output(cls, "New pair: compare A and B, choose, then queue again to record.", preview)
        rec = store.add_preference(fa, fb, a, b, PREFERENCES[preference], annotator=annotator, reason=reason,
                                   model_a=model_a, model_b=model_b, only_if_changed=True)
        if rec is None:
            status = f"Already recorded this choice for {annotator.strip()}: change it to record a new version."
        else:
            status = f"Recorded preference {rec['choice']} (version {rec['version']}) in {store.root}."
        return _output(cls, status, preview)


class FeedbackStats(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_FeedbackStats",
            display_name="Feedback Stats",
            category=CATEGORY,
            description="What a feedback folder holds: ratings per annotator and dimension, score histograms and "
            "how far annotators agree on images they both rated.",
            is_output_node=True,
            inputs=[_dataset_input()],
            outputs=[io.String.Output("report", tooltip="The statistics as a text table.")],
        )

    @classmethod
    def fingerprint_inputs(cls, dataset):
        store = _store(dataset)
        return os.stat(store.records_path).st_mtime_ns if store.records_path.is_file() else None

    @classmethod
    def execute(cls, dataset):
        store = _store(dataset)
        if not store.records_path.is_file():
            raise ValueError(f"{store.root}: no feedback recorded there yet")
        report = format_stats(feedback_stats(store, skip_bad=True))
        return io.NodeOutput(report, ui=ui.PreviewText(report))


NODES = [RateFusion, CompareFusions, FeedbackStats]
