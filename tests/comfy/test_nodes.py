"""The EVAFusion pack on the real ComfyUI server: registration, example workflows, bad prompts."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from evafusion_core.demo import WORKFLOWS_DIR
from evafusion_core.workflow import WorkflowError, convert_to_api, run_prompt, run_workflow

EXPECTED_INPUTS = {
    "EVAF_LoadIRVisPair": {"ir_image", "vis_image", "ir_path", "vis_path", "normalise", "resize"},
    "EVAF_IRVisFromImages": {"ir", "vis", "resize"},
    "EVAF_FusionModelLoader": {"model", "hub_repo_id", "device", "precision", "keep_loaded", "work_size"},
    "EVAF_Fuse": {"model", "ir", "vis", "tile"},
    "EVAF_FusionMetrics": {"fused", "ir", "vis", "convention", "metric", "label"},
    "EVAF_PairFolderLoader": {"folder", "max_pairs", "width", "height", "start", "skip_unreadable"},
    "EVAF_RewardModelLoader": {"model", "device", "precision", "keep_loaded", "hub_repo_id"},
    "EVAF_Score": {"reward_model", "fused", "ir", "vis"},
    "EVAF_ArtifactHeatmap": {"reward_model", "fused", "ir", "vis", "opacity"},
    "EVAF_SAMModelLoader": {"model_type", "checkpoint", "device", "keep_loaded", "hub_repo_id", "hub_filename"},
    "EVAF_SAMRegions": {"ir", "vis", "sam_on", "points_per_side", "pred_iou_thresh", "stability_score_thresh",
                        "superpixel_method", "n_segments", "min_area", "max_regions", "sam_model", "fused"},
    "EVAF_GRPOStep": {"model", "reward_model", "ir", "vis", "mode", "steps", "group_size", "sigma", "lr", "beta",
                      "clip_eps", "fidelity", "heatmap_penalty", "crop", "superpixel_method", "seed", "regions"},
    "EVAF_SaveFusionModel": {"model", "name", "overwrite"},
    "EVAF_RateFusion": {"fused", "ir", "vis", "thermal_retention", "texture_preservation", "artifacts", "sharpness",
                        "overall", "annotator", "dataset", "mode", "artifact_mask", "model_name", "note"},
    "EVAF_CompareFusions": {"fused_a", "fused_b", "ir", "vis", "preference", "annotator", "dataset", "mode",
                            "reason", "model_a", "model_b"},
    "EVAF_FeedbackStats": {"dataset"},
}


def _strip(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0


def test_pack_loads_and_every_node_is_listed(comfy_server, object_info):
    log = comfy_server.log_path.read_text()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if "evafusion" in line)
    for node_id, inputs in EXPECTED_INPUTS.items():
        assert node_id in object_info, f"{node_id} missing from /object_info"
        info = object_info[node_id]
        listed = set(info["input"]["required"]) | set(info["input"].get("optional", {}))
        assert listed == inputs, node_id
        assert info["category"].startswith("EVAFusion/")
        for spec in info["input"]["required"].values():
            assert spec[1].get("tooltip"), f"{node_id}: every input needs a tooltip"


def test_template_browser_lists_every_workflow_with_its_thumbnail(comfy_server):
    """Workflow -> Browse Templates lists workflows/*.json and shows workflows/<name>.jpg on a square card
    (regenerate them with scripts/make_thumbnails.py when a workflow changes)."""
    names = sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))
    listing = requests.get(f"{comfy_server.url}/api/workflow_templates", timeout=30).json()
    module = next(m for m, listed in listing.items() if set(names) <= set(listed))
    for name in names:
        resp = requests.get(f"{comfy_server.url}/api/workflow_templates/{module}/{name}.jpg", timeout=30)
        assert resp.status_code == 200, f"{name}.jpg: HTTP {resp.status_code}"
        thumb = Image.open(io.BytesIO(resp.content))
        assert thumb.format == "JPEG" and thumb.width == thumb.height, (name, thumb.format, thumb.size)
        assert np.asarray(thumb.convert("L")).std() > 10, f"{name}.jpg is blank"


@pytest.mark.parametrize("ui_file", sorted(WORKFLOWS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_browser_format_converts_to_its_api_twin(ui_file, object_info):
    twin = json.loads((WORKFLOWS_DIR / "api" / ui_file.name).read_text())
    assert _strip(convert_to_api(json.loads(ui_file.read_text()), object_info)) == _strip(twin)


def test_fuse_pair_workflow(comfy_server, demo_inputs):
    files = run_workflow(WORKFLOWS_DIR / "fuse_pair.json", server_url=comfy_server.url)
    assert len(files) == 1 and files[0].suffix == ".png"
    fused = _grey(files[0])
    ir, vis = _grey(demo_inputs / "evafusion_demo_ir.png"), _grey(demo_inputs / "evafusion_demo_vis.png")
    assert fused.shape == ir.shape == (480, 640)
    assert 0.05 < fused.mean() < 0.95 and fused.std() > 0.05
    # A fusion is closer to each source than the other source is.
    assert np.abs(fused - ir).mean() < np.abs(vis - ir).mean()
    assert np.abs(fused - vis).mean() < np.abs(ir - vis).mean()


def test_compare_metrics_workflow(comfy_server, demo_inputs):
    api = json.loads((WORKFLOWS_DIR / "api" / "fuse_compare_metrics.json").read_text())
    outputs = run_prompt(comfy_server.url, api)
    tables = {nid: out["text"][0] for nid, out in outputs.items() if "text" in out}
    assert set(tables) == {"8", "9", "10"}
    values = {}
    for text in tables.values():
        label = text.split(" ", 1)[0]
        values[label] = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in text.splitlines()[1:]}
    assert set(values) == {"light", "laplacian", "average"}
    assert all(0 < v["Qabf"] < 1 and 0 < v["SSIM"] <= 1 for v in values.values())
    # The averaging baseline halves thermal contrast: its standard deviation is lowest.
    assert values["average"]["SD"] < values["light"]["SD"]
    saved = [f for f in outputs["13"]["images"]]
    assert len(saved) == 3


def test_fuse_folder_workflow(comfy_server, demo_inputs):
    files = run_workflow(WORKFLOWS_DIR / "fuse_folder.json", server_url=comfy_server.url)
    assert len(files) == 2
    assert all(Image.open(f).size == (320, 240) for f in files)


def test_folder_loader_stops_at_a_corrupt_pair_or_skips_it(comfy_server, demo_inputs):
    folder = demo_inputs / "folder_with_bad_pair"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(demo_inputs / "evafusion_demo_folder", folder)
    (folder / "ir" / "bad.png").write_bytes(b"not a png")
    shutil.copy(folder / "vi" / "demo1.png", folder / "vi" / "bad.png")
    api = json.loads((WORKFLOWS_DIR / "api" / "fuse_folder.json").read_text())
    api["1"]["inputs"]["folder"] = folder.name
    api["4"]["inputs"]["filename_prefix"] = "evafusion/skip_test"

    with pytest.raises(WorkflowError, match=r"bad\.png"):
        run_prompt(comfy_server.url, api)

    api["1"]["inputs"]["skip_unreadable"] = True
    outputs = run_prompt(comfy_server.url, api)
    assert len(outputs["4"]["images"]) == 2  # demo1 and demo2; the corrupt pair is left out


def _prompt(**pair_overrides) -> dict:
    api = json.loads((WORKFLOWS_DIR / "api" / "fuse_pair.json").read_text())
    api["1"]["inputs"].update(pair_overrides)
    return api


def test_bad_prompts_give_clear_errors_and_server_survives(comfy_server, demo_inputs, comfy_dirs):
    wrong_link = _prompt()
    wrong_link["3"]["inputs"]["model"] = ["1", 0]  # an IMAGE into a FUSION_MODEL socket
    with pytest.raises(WorkflowError, match="(?i)mismatch"):
        run_prompt(comfy_server.url, wrong_link)

    missing = _prompt()
    del missing["3"]["inputs"]["ir"]
    with pytest.raises(WorkflowError, match="(?i)required input missing|ir"):
        run_prompt(comfy_server.url, missing)

    too_big = _prompt()
    too_big["3"]["inputs"]["tile"] = 999999
    with pytest.raises(WorkflowError, match="(?i)bigger than max|tile"):
        run_prompt(comfy_server.url, too_big)

    with pytest.raises(WorkflowError, match="no_such_file.png: file not found"):
        run_prompt(comfy_server.url, _prompt(ir_path=str(comfy_dirs["input"] / "no_such_file.png")))

    small = comfy_dirs["input"] / "small_ir.png"
    Image.new("L", (32, 24)).save(small)
    with pytest.raises(WorkflowError, match=r"32x24.*640x480"):
        run_prompt(comfy_server.url, _prompt(ir_path=str(small)))

    baseline_at_work_size = _prompt()
    baseline_at_work_size["2"]["inputs"].update(model="average", work_size=320)
    with pytest.raises(WorkflowError, match="work_size applies to 'light' networks; average is 'average'"):
        run_prompt(comfy_server.url, baseline_at_work_size)

    # The server keeps serving: good prompts still run, light at a working size too.
    outputs = run_prompt(comfy_server.url, _prompt())
    assert outputs["4"]["images"]
    at_work_size = _prompt()
    at_work_size["2"]["inputs"]["work_size"] = 320
    assert run_prompt(comfy_server.url, at_work_size)["4"]["images"]


BLOCKER = '''
import sys

class _Block:
    """Make the named packages look uninstalled (the test's stand-in for a missing optional dependency)."""
    names = {NAMES}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _Block())
'''


def test_missing_optional_dependency_degrades(comfy_dir, tmp_path):
    """With timm hidden, the groups that need it are skipped with a logged reason; the fusion and metrics
    nodes, and ComfyUI itself, still work."""
    import os

    from evafusion_core.workflow import ComfyServer

    site = tmp_path / "site"
    site.mkdir()
    # Hide a pack-only optional dependency; timm is used only by the reward/training groups.
    (site / "sitecustomize.py").write_text(BLOCKER.replace("{NAMES}", "{'timm'}"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    with ComfyServer(["--cache-none"], comfy_dir=comfy_dir, env=env, log_path=tmp_path / "server.log") as server:
        info = server.object_info()
        log = server.log_path.read_text()
    assert "EVAF_Fuse" in info and "EVAF_FusionMetrics" in info
    assert "EVAFusion: skipping the reward nodes: timm is not installed" in log
    assert not any(k.startswith("EVAF_RewardModel") for k in info)


def test_sam_regions_workflow_falls_back_to_superpixels(comfy_server, demo_inputs):
    """No SAM checkpoint is connected, so the node uses superpixels (and says so in the log)."""
    files = run_workflow(WORKFLOWS_DIR / "sam_regions.json", server_url=comfy_server.url)
    assert len(files) == 1
    overlay = np.asarray(Image.open(files[0]).convert("RGB"), dtype=np.float64)
    assert overlay.shape == (480, 640, 3)
    # A coloured overlay: channels differ (the inputs' grey IR alone would not).
    assert np.abs(overlay[..., 0] - overlay[..., 1]).mean() > 2
    assert "superpixel" in comfy_server.log_path.read_text().lower()

