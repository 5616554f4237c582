"""training/train_light.py: a tiny run, stopped and resumed, ends with the weights of one never stopped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_light", REPO / "training" / "train_light.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path, write_demo_pairs):
    from safetensors.torch import load_file

    from evafusion_core.hub import load_fusion_model

    train_light = _script()
    cfg = json.loads((REPO / "training" / "configs" / "light.json").read_text())
    cfg.update({"data": [str(write_demo_pairs(tmp_path / "data", 3, 48, 64))], "steps": 4, "batch_size": 2,
                "crop": 32, "checkpoint_every": 3})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    base = ["--config", str(tmp_path / "cfg.json"), "--device", "cpu"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert train_light.main([*base, "--out", str(tmp_path / "full")]) == 0
        assert train_light.main([*base, "--out", str(tmp_path / "part"), "--stop-after", "3"]) == 0
        assert not (tmp_path / "part" / "final").exists() and (tmp_path / "part" / "plot.png").is_file()
        with open(tmp_path / "part" / "log.jsonl", "a") as f:  # as if killed after logging step 4
            f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
        assert train_light.main([*base, "--out", str(tmp_path / "part"), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in logged)
    assert load_fusion_model(str(tmp_path / "part" / "final")).architecture == "light"


def test_scale_range_cuts_patches_at_the_drawn_scale():
    """With scale_range (2, 2) a 32 px patch covers 16 source pixels: a 2x enlargement, as on a bigger camera."""
    import random

    train_light = _script()
    ramp = torch.arange(64.0).repeat(64, 1)[None] / 64  # [1,64,64], brightness grows by 1/64 per column
    pairs = [(ramp, 1 - ramp)]
    ir, vis = train_light.sample_batch(pairs, 4, 32, random.Random(0))
    assert ir.shape == vis.shape == (4, 1, 32, 32)
    steps = ir[:, 0, 16, 1:] - ir[:, 0, 16, :-1]
    assert torch.allclose(steps.abs().mean(), torch.tensor(1 / 64), atol=1e-4)  # native scale
    ir, vis = train_light.sample_batch(pairs, 4, 32, random.Random(0), scale_range=(2.0, 2.0))
    assert ir.shape == vis.shape == (4, 1, 32, 32)
    steps = ir[:, 0, 16, 2:-2] - ir[:, 0, 16, 1:-3]
    assert torch.allclose(steps.abs().mean(), torch.tensor(1 / 128), atol=1e-4)  # half the slope: enlarged 2x
    assert torch.allclose(ir + vis, torch.ones_like(ir), atol=1e-5)  # both sources cut at the same place
