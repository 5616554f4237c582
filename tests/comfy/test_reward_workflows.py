"""Workflows that need the bundled reward model: score-and-heatmap and GRPO fine-tuning, on the real server."""

from __future__ import annotations

import json

from PIL import Image

from evafusion_core.demo import WORKFLOWS_DIR
from evafusion_core.workflow import run_prompt, run_workflow


def test_score_and_heatmap_workflow(comfy_server, demo_inputs):
    api = json.loads((WORKFLOWS_DIR / "api" / "score_and_heatmap.json").read_text())
    outputs = run_prompt(comfy_server.url, api)
    header, row = outputs["5"]["text"][0].splitlines()[:2]
    assert header.split() == ["image", "thermal", "texture", "artifacts", "sharpness", "overall"]
    scores = [float(v) for v in row.split()[1:]]
    assert len(scores) == 5 and all(1.0 <= s <= 5.0 for s in scores)
    files = run_workflow(WORKFLOWS_DIR / "score_and_heatmap.json", server_url=comfy_server.url)
    overlay = [f for f in files if "heatmap" in f.name]
    assert len(overlay) == 1 and Image.open(overlay[0]).size == (640, 480)


def test_grpo_finetune_workflow(comfy_server, demo_inputs, comfy_dir):
    files = run_workflow(WORKFLOWS_DIR / "grpo_finetune.json", server_url=comfy_server.url)
    curve = [f for f in files if "grpo_curve" in f.name]
    fused = [f for f in files if "grpo_fused" in f.name]
    assert len(curve) == 1 and len(fused) == 2
    saved = comfy_dir / "models" / "evafusion" / "light-grpo-demo"
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    # The saved model loads back through the library's single loader.
    from evafusion_core.hub import load_fusion_model

    assert load_fusion_model(saved).architecture == "light"


def test_demo_command_runs_the_score_workflow(tmp_path, capsys):
    """`make demo`'s command: fuse, score and map artifacts of the demo pair through a real server."""
    from evafusion_core.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fused_" in out and "heatmap_" in out
    assert Image.open(tmp_path / "demo_side_by_side.png").size[0] > 3 * 640
