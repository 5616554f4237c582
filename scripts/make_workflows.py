"""Write the example workflows in both formats from one compact description.

    .venv/bin/python scripts/make_workflows.py

Starts a local ComfyUI (the provisioned one) to read ``/object_info``, so that each
browser-format file lists its widget values in the order the real frontend uses.
Writes ``workflows/<name>.json`` (drag into ComfyUI) and ``workflows/api/<name>.json``
(for ``evafusion run-workflow`` and the server's /prompt). Then ``scripts/make_thumbnails.py``
redraws the template browser's pictures (``workflows/<name>.jpg``) from the new workflows' runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.workflow import ComfyServer  # noqa: E402

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

# Each node: id -> (class_type, title, {input: value or (source_id, output_slot)})
PAIR = {"ir_image": "evafusion_demo_ir.png", "vis_image": "evafusion_demo_vis.png", "ir_path": "", "vis_path": "",
        "normalise": "percentile", "resize": False}
FOLDER = {"folder": "evafusion_demo_folder", "max_pairs": 0, "width": 0, "height": 0, "start": 0,
          "skip_unreadable": False}
LOADER = {"hub_repo_id": "", "device": "auto", "precision": "auto", "keep_loaded": True}
FUSION_LOADER = {**LOADER, "work_size": 0}
FEEDBACK = {"annotator": "", "dataset": "evafusion_feedback", "mode": "preview first"}
RATING = {"thermal_retention": 3, "texture_preservation": 3, "artifacts": 3, "sharpness": 3, "overall": 3,
          **FEEDBACK, "note": ""}

WORKFLOWS: dict[str, dict[str, dict]] = {
    "fuse_pair": {
        "description": "Fuse the demo IR/visible pair with the bundled light network and save it.",
        "nodes": {
            1: ("EVAF_LoadIRVisPair", "Load IR/VIS Pair", PAIR),
            2: ("EVAF_FusionModelLoader", "Fusion Model Loader", {"model": "light", **FUSION_LOADER}),
            3: ("EVAF_Fuse", "Fuse IR + VIS", {"model": (2, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            4: ("SaveImage", "Save fused", {"images": (3, 0), "filename_prefix": "evafusion/fused"}),
        },
    },
    "fuse_compare_metrics": {
        "description": "Fuse with light and two classic baselines; compare objective metrics side by side.",
        "nodes": {
            1: ("EVAF_LoadIRVisPair", "Load IR/VIS Pair", PAIR),
            2: ("EVAF_FusionModelLoader", "light", {"model": "light", **FUSION_LOADER}),
            3: ("EVAF_FusionModelLoader", "laplacian", {"model": "laplacian", **FUSION_LOADER}),
            4: ("EVAF_FusionModelLoader", "average", {"model": "average", **FUSION_LOADER}),
            5: ("EVAF_Fuse", "Fuse light", {"model": (2, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            6: ("EVAF_Fuse", "Fuse laplacian", {"model": (3, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            7: ("EVAF_Fuse", "Fuse average", {"model": (4, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            8: ("EVAF_FusionMetrics", "Metrics light", {"fused": (5, 0), "ir": (1, 0), "vis": (1, 1),
                                                        "convention": "tang", "metric": "Qabf", "label": "light"}),
            9: ("EVAF_FusionMetrics", "Metrics laplacian", {"fused": (6, 0), "ir": (1, 0), "vis": (1, 1),
                                                            "convention": "tang", "metric": "Qabf",
                                                            "label": "laplacian"}),
            10: ("EVAF_FusionMetrics", "Metrics average", {"fused": (7, 0), "ir": (1, 0), "vis": (1, 1),
                                                           "convention": "tang", "metric": "Qabf",
                                                           "label": "average"}),
            11: ("ImageBatch", "Batch light+laplacian", {"image1": (5, 0), "image2": (6, 0)}),
            12: ("ImageBatch", "Batch +average", {"image1": (11, 0), "image2": (7, 0)}),
            13: ("SaveImage", "Save light, laplacian, average", {"images": (12, 0),
                                                                 "filename_prefix": "evafusion/compare"}),
        },
    },
    "fuse_folder": {
        "description": "Fuse every pair in a folder with ir/ and vi/ subfolders (batch processing).",
        "nodes": {
            1: ("EVAF_PairFolderLoader", "Load IR/VIS Folder", FOLDER),
            2: ("EVAF_FusionModelLoader", "Fusion Model Loader", {"model": "light", **FUSION_LOADER}),
            3: ("EVAF_Fuse", "Fuse IR + VIS", {"model": (2, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            4: ("SaveImage", "Save fused", {"images": (3, 0), "filename_prefix": "evafusion/folder"}),
        },
    },
    "score_and_heatmap": {
        "description": "Fuse the demo pair, score it with the reward model and show where it sees artifacts.",
        "nodes": {
            1: ("EVAF_LoadIRVisPair", "Load IR/VIS Pair", PAIR),
            2: ("EVAF_FusionModelLoader", "Fusion Model Loader", {"model": "light", **FUSION_LOADER}),
            3: ("EVAF_Fuse", "Fuse IR + VIS", {"model": (2, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            4: ("EVAF_RewardModelLoader", "Reward Model Loader", {"model": "small", **LOADER}),
            5: ("EVAF_Score", "Score", {"reward_model": (4, 0), "fused": (3, 0), "ir": (1, 0), "vis": (1, 1)}),
            6: ("EVAF_ArtifactHeatmap", "Artifact Heatmap", {"reward_model": (4, 0), "fused": (3, 0), "ir": (1, 0),
                                                             "vis": (1, 1)}),
            7: ("SaveImage", "Save fused", {"images": (3, 0), "filename_prefix": "evafusion/fused"}),
            8: ("SaveImage", "Save heatmap overlay", {"images": (6, 1), "filename_prefix": "evafusion/heatmap"}),
        },
    },
    "sam_regions": {
        "description": "Propose regions on the demo pair (SAM when a checkpoint is loaded, else superpixels).",
        "nodes": {
            1: ("EVAF_LoadIRVisPair", "Load IR/VIS Pair", PAIR),
            2: ("EVAF_SAMRegions", "Regions", {"ir": (1, 0), "vis": (1, 1)}),
            3: ("SaveImage", "Save region overlay", {"images": (2, 1), "filename_prefix": "evafusion/regions"}),
        },
    },
    "grpo_finetune": {
        "description": "Fine-tune light with GRPO against the reward model on a folder of pairs, save it, "
        "and fuse with the result.",
        "nodes": {
            1: ("EVAF_PairFolderLoader", "Load IR/VIS Folder", FOLDER),
            2: ("EVAF_FusionModelLoader", "Fusion Model Loader", {"model": "light", **FUSION_LOADER}),
            3: ("EVAF_RewardModelLoader", "Reward Model Loader", {"model": "small", **LOADER}),
            4: ("EVAF_GRPOStep", "GRPO Step", {"model": (2, 0), "reward_model": (3, 0), "ir": (1, 0), "vis": (1, 1),
                                               "steps": 2, "group_size": 4, "crop": 96}),
            5: ("EVAF_SaveFusionModel", "Save Fusion Model", {"model": (4, 0), "name": "light-grpo-demo",
                                                              "overwrite": True}),
            6: ("SaveImage", "Save reward curve", {"images": (4, 2), "filename_prefix": "evafusion/grpo_curve"}),
            7: ("EVAF_Fuse", "Fuse with fine-tuned", {"model": (4, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            8: ("SaveImage", "Save fused", {"images": (7, 0), "filename_prefix": "evafusion/grpo_fused"}),
        },
    },
    "human_rating": {
        "description": "Rate fusions by two models of one pair from a folder, and say which is better. Queue once "
        "to see the images, set the sliders and your name, queue again to record; then raise 'start' for the "
        "next pair. Ratings go to output/evafusion_feedback and train the reward model "
        "(evafusion train-reward --feedback).",
        "node_size": (420, 560),
        "row_height": 820,
        "nodes": {
            1: ("EVAF_PairFolderLoader", "Load one pair (raise start for the next)", {**FOLDER, "max_pairs": 1}),
            2: ("EVAF_FusionModelLoader", "Model A: light", {"model": "light", **FUSION_LOADER}),
            3: ("EVAF_FusionModelLoader", "Model B: average", {"model": "average", **FUSION_LOADER}),
            4: ("EVAF_Fuse", "Fuse with A", {"model": (2, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            5: ("EVAF_Fuse", "Fuse with B", {"model": (3, 0), "ir": (1, 0), "vis": (1, 1), "tile": 0}),
            6: ("EVAF_RateFusion", "Rate A", {"fused": (4, 0), "ir": (1, 0), "vis": (1, 1), **RATING,
                                              "model_name": "light"}),
            7: ("EVAF_RateFusion", "Rate B", {"fused": (5, 0), "ir": (1, 0), "vis": (1, 1), **RATING,
                                              "model_name": "average"}),
            8: ("EVAF_CompareFusions", "A or B?", {"fused_a": (4, 0), "fused_b": (5, 0), "ir": (1, 0), "vis": (1, 1),
                                                   "preference": "about the same", **FEEDBACK, "reason": "",
                                                   "model_a": "light", "model_b": "average"}),
        },
    },
}


def _is_link(v) -> bool:
    return isinstance(v, tuple)


def _kind(spec) -> str | None:
    typ = spec[0]
    if isinstance(typ, list):
        return "COMBO"
    return typ if typ in WIDGET_TYPES else None


def _default(ispec: list):
    """What the frontend puts in a widget the spec leaves out: the default, else a combo's first option."""
    opts = ispec[1] if len(ispec) > 1 else {}
    if "default" in opts:
        return opts["default"]
    choices = ispec[0] if isinstance(ispec[0], list) else opts.get("options")
    return choices[0] if choices else None


def _ordered(node_def: dict) -> list[tuple[str, list]]:
    out = []
    for section in ("required", "optional"):
        specs = node_def["input"].get(section, {})
        for name in node_def.get("input_order", {}).get(section, list(specs)):
            out.append((name, specs[name]))
    return out


def _with_defaults(cls: str, inputs: dict, object_info: dict) -> dict:
    """The spec's inputs plus the schema default of every widget the spec leaves out."""
    full = {}
    for name, ispec in _ordered(object_info[cls]):
        if name in inputs:
            full[name] = inputs[name]
        elif _kind(ispec) is not None and _default(ispec) is not None:
            full[name] = _default(ispec)
    return full


def to_api(spec: dict, object_info: dict) -> dict:
    api = {}
    for nid, (cls, title, inputs) in spec["nodes"].items():
        full = _with_defaults(cls, inputs, object_info)
        api[str(nid)] = {
            "class_type": cls,
            "inputs": {k: [str(v[0]), v[1]] if _is_link(v) else v for k, v in full.items()},
            "_meta": {"title": title},
        }
    return api


def to_ui(spec: dict, object_info: dict) -> dict:
    """The litegraph document the frontend saves: nodes with sockets and widget values, plus links."""
    nodes, links = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    depth: dict[int, int] = {}
    for nid, (_, _, inputs) in spec["nodes"].items():
        srcs = [v[0] for v in inputs.values() if _is_link(v)]
        depth[nid] = 1 + max((depth[s] for s in srcs), default=-1)
    rows: dict[int, int] = {}
    w, h = spec.get("node_size", (340, 200))
    row_h = spec.get("row_height", 480)
    for order, (nid, (cls, title, inputs)) in enumerate(spec["nodes"].items()):
        node_def = object_info[cls]
        sockets, widgets = [], []
        for name, ispec in _ordered(node_def):
            kind = _kind(ispec)
            value = inputs.get(name, _default(ispec))
            if kind is None:  # a socket
                link = None
                if name in inputs:
                    src, slot = inputs[name]
                    link = len(links) + 1
                    typ = object_info[spec["nodes"][src][0]]["output"][slot]
                    links.append([link, src, slot, nid, len(sockets), typ])
                    out_links.setdefault((src, slot), []).append(link)
                sockets.append({"name": name, "type": ispec[0], "link": link})
                continue
            if _is_link(value):
                raise ValueError(f"{cls}.{name}: linking a widget is not used in the examples")
            widgets.append(value)
        row = rows.get(depth[nid], 0)
        rows[depth[nid]] = row + 1
        nodes.append({
            "id": nid, "type": cls, "pos": [60 + (w + 60) * depth[nid], 60 + row_h * row], "size": [w, h],
            "flags": {}, "order": order, "mode": 0, "inputs": sockets,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(node_def["output_name"], node_def["output"]))],
            "title": title, "properties": {"Node name for S&R": cls, "cnr_id": "evafusion"},
            "widgets_values": widgets,
        })
    for node in nodes:
        for out in node["outputs"]:
            out["links"] = out_links.get((node["id"], out["slot_index"]), [])
    return {
        "last_node_id": max(spec["nodes"]), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {"evafusion": {"description": spec["description"]}}, "version": 0.4,
    }


def main() -> int:
    names = sys.argv[1:] or list(WORKFLOWS)
    with ComfyServer() as server:
        info = server.object_info()
    for name in names:
        spec = WORKFLOWS[name]
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(to_ui(spec, info), indent=2) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(to_api(spec, info), indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
