"""The reward model: shapes, save/load, evaluation metrics, training (single, resumed, 2-process DDP), CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evafusion_core.reward import (
    DIMENSIONS,
    REWARD_ARCHITECTURES,
    RewardModel,
    create_reward_model,
    load_reward_model,
)
from evafusion_core.reward import evaluate as ev

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = {"backbone": "lcnet_050", "image_size": 64, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_dim": 16}


def tiny_model(seed: int = 0) -> RewardModel:
    torch.manual_seed(seed)
    return create_reward_model("small", **TINY).eval()


@pytest.fixture(scope="module")
def model() -> RewardModel:
    return tiny_model()


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory) -> Path:
    """A folder with ir/, vi/ and fused/ (average) for four small procedural pairs."""
    from evafusion_core.demo import make_demo_pair
    from evafusion_core.io import save_image

    root = tmp_path_factory.mktemp("demo_set")
    for seed in range(4):
        ir, vis = make_demo_pair(40, 56, seed=seed)
        save_image(ir, root / "ir" / f"p{seed}.png")
        save_image(vis, root / "vi" / f"p{seed}.png")
        save_image((ir + vis) / 2, root / "fused" / f"p{seed}.png")
    return root


def test_dimensions_are_the_original_names():
    assert DIMENSIONS == ("Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall")


def test_predict_shapes_and_ranges_on_odd_sizes(model):
    fused, ir, vis = torch.rand(2, 3, 45, 61), torch.rand(2, 1, 45, 61), torch.rand(2, 3, 45, 61)
    out = model.predict(fused, ir, vis)
    assert out["scores"].shape == (2, 5)
    assert bool(((out["scores"] >= 1) & (out["scores"] <= 5)).all())
    for name in DIMENSIONS:
        assert out[name].shape == (2,)
    assert out["heatmap"].shape == (2, 1, 45, 61)
    assert 0 <= float(out["heatmap"].min()) and float(out["heatmap"].max()) <= 1
    raw = model(fused, ir, vis)
    assert raw["scores"].shape == (2, 5) and bool(((raw["scores"] > 0) & (raw["scores"] < 1)).all())


@pytest.mark.parametrize("hw", [(17, 300), (100, 70), (64, 64)])
def test_any_input_size_and_grey_inputs(model, hw):
    h, w = hw
    out = model.predict(torch.rand(1, 1, h, w), torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
    assert out["heatmap"].shape == (1, 1, h, w)
    rgba = model.predict(torch.rand(1, 4, h, w), torch.rand(1, 3, h, w), torch.rand(1, 4, h, w))
    assert rgba["scores"].shape == (1, 5)
    with pytest.raises(ValueError, match="channels"):
        model.predict(torch.rand(1, 2, h, w), torch.rand(1, 1, h, w), torch.rand(1, 3, h, w))


def test_batch_equals_single(model):
    fused, ir, vis = torch.rand(3, 3, 50, 40), torch.rand(3, 1, 50, 40), torch.rand(3, 3, 50, 40)
    batch = model.predict(fused, ir, vis)
    one = model.predict(fused[1:2], ir[1:2], vis[1:2])
    assert torch.allclose(batch["scores"][1:2], one["scores"], atol=1e-5)
    assert torch.allclose(batch["heatmap"][1:2], one["heatmap"], atol=1e-5)


def test_test_time_flip_averages_the_mirrored_pass_and_is_saved(model, tmp_path):
    torch.manual_seed(1)
    n = model.image_size // model.heatmap_stride  # the decoder's resolution: predict() resizes nothing
    x = (torch.rand(2, 3, n, n), torch.rand(2, 1, n, n), torch.rand(2, 3, n, n))
    plain = model.predict(*x)
    mirrored = model.predict(*(t.flip(-1) for t in x))
    assert not torch.allclose(plain["scores"], mirrored["scores"], atol=1e-4)  # the flip is not a no-op

    flip = create_reward_model("small", **TINY, test_time_flip=True).eval()
    flip.load_state_dict(model.state_dict())
    got = flip.predict(*x)
    assert torch.allclose(got["scores"], (plain["scores"] + mirrored["scores"]) / 2, atol=1e-5)
    assert torch.allclose(got["heatmap"], (plain["heatmap"] + mirrored["heatmap"].flip(-1)) / 2, atol=1e-5)
    flip.save_pretrained(tmp_path / "flip")
    assert json.loads((tmp_path / "flip" / "config.json").read_text())["test_time_flip"] is True
    assert load_reward_model(str(tmp_path / "flip")).test_time_flip is True
    assert load_reward_model(str(tmp_path / "flip")).predict(*x)["scores"].allclose(got["scores"], atol=1e-6)


def test_heatmap_blur_smooths_the_returned_heatmap_only_and_is_saved(model, tmp_path):
    torch.manual_seed(2)
    x = (torch.rand(1, 3, 48, 64), torch.rand(1, 1, 48, 64), torch.rand(1, 3, 48, 64))
    plain = model.predict(*x)
    blur = create_reward_model("small", **TINY, heatmap_blur=0.05).eval()
    blur.load_state_dict(model.state_dict())
    got = blur.predict(*x)
    assert torch.equal(got["scores"], plain["scores"])  # the heads read the unsmoothed map
    assert got["heatmap"].shape == plain["heatmap"].shape == (1, 1, 48, 64)
    # smoothing spreads the map: less spatial variance, the same mean within interpolation error
    assert got["heatmap"].std() < 0.9 * plain["heatmap"].std()
    assert abs(float(got["heatmap"].mean() - plain["heatmap"].mean())) < 0.02
    with torch.no_grad():
        heat = blur.probabilities(*x)["heatmap"]
    assert blur.output_heatmap(heat, (48, 64), blur=0.0).allclose(plain["heatmap"], atol=1e-6)
    blur.save_pretrained(tmp_path / "blur")
    assert json.loads((tmp_path / "blur" / "config.json").read_text())["heatmap_blur"] == 0.05
    assert load_reward_model(str(tmp_path / "blur")).predict(*x)["heatmap"].allclose(got["heatmap"], atol=1e-6)
    with pytest.raises(ValueError, match="heatmap_blur"):
        create_reward_model("small", **TINY, heatmap_blur=-0.1)


def test_save_and_load_round_trip_through_hub(model, tmp_path):
    from evafusion_core.errors import ModelLoadError
    from evafusion_core.hub import load_pretrained

    model.save_pretrained(tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architecture"] == "rahf_reward" and config["pretrained_backbone"] is False
    assert config["backbone"] == "lcnet_050" and config["image_size"] == 64
    x = (torch.rand(1, 3, 33, 47), torch.rand(1, 1, 33, 47), torch.rand(1, 3, 33, 47))
    want = model.predict(*x)
    for loaded in (load_pretrained(tmp_path / "rm", REWARD_ARCHITECTURES, kind="reward"),
                   load_reward_model(str(tmp_path / "rm")),
                   load_reward_model(tmp_path / "rm" / "model.safetensors")):
        assert isinstance(loaded, RewardModel) and not loaded.training
        got = loaded.predict(*x)
        assert torch.allclose(got["scores"], want["scores"], atol=1e-6)
        assert torch.allclose(got["heatmap"], want["heatmap"], atol=1e-6)
    # A fusion-network folder is refused with the architecture named, not loaded as garbage.
    from evafusion_core.models import create_model

    create_model("light").save_pretrained(tmp_path / "fusion")
    with pytest.raises(ModelLoadError, match="architecture"):
        load_reward_model(str(tmp_path / "fusion"))


def test_bundled_small_loads_or_says_how_to_get_it():
    from evafusion_core.errors import ModelLoadError
    from evafusion_core.hub import bundled_names

    if "small" in bundled_names("reward"):
        m = load_reward_model("small")
        x = torch.rand(1, 3, 48, 64)
        assert m.predict(x, x[:, :1], x)["scores"].shape == (1, 5)
    else:
        with pytest.raises(ModelLoadError, match="train-reward"):
            load_reward_model("small")


def test_rahf_large_preset_is_the_original_scale():
    with torch.device("meta"):
        m = create_reward_model("rahf-large")
    assert m.image_size == 384 and m.grid == 24
    assert m.hub_config()["backbone"] == "vit_large_patch16_384"
    assert m.hub_config()["pretrained_backbone"] is False
    assert m.num_parameters() > 300_000_000
    with pytest.raises(ValueError, match="preset"):
        create_reward_model("huge")


# --------------------------------------------------------------------------------------------
# metrics on hand-computed cases
# --------------------------------------------------------------------------------------------
def test_correlations():
    a = [1.0, 2.0, 3.0, 4.0]
    assert ev.plcc(a, [2.0, 4.0, 6.0, 8.0]) == pytest.approx(1.0)
    assert ev.srcc(a, [1.0, 10.0, 100.0, 1000.0]) == pytest.approx(1.0)
    assert ev.srcc(a, [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert np.isnan(ev.plcc(a, [3.0, 3.0, 3.0, 3.0]))
    res = ev.score_correlations(np.tile(np.array(a)[:, None], (1, 5)), np.tile(np.array(a)[:, None] + 1, (1, 5)))
    assert set(res) == set(DIMENSIONS) and res["Overall"]["plcc"] == pytest.approx(1.0)
    assert res["Overall"]["mae"] == pytest.approx(1.0)


def test_heatmap_metrics_hand_computed():
    g = np.zeros((4, 4))
    g[1:3, 1:3] = 1.0
    fix = g > 0
    assert ev.heat_cc(g, g) == pytest.approx(1.0)
    assert ev.heat_cc(1 - g, g) == pytest.approx(-1.0)
    assert ev.heat_kld(g, g) == pytest.approx(0.0, abs=1e-9)
    assert ev.heat_sim(g, g) == pytest.approx(1.0)
    assert ev.heat_sim(1 - g, g) == pytest.approx(0.0)
    # KLD of a uniform prediction: the truth puts 1/4 on four of 16 pixels -> log(4).
    assert ev.heat_kld(np.ones((4, 4)), g) == pytest.approx(np.log(4.0), rel=1e-6)
    # NSS of the truth itself: standardised value of the fixated pixels = (1 - 0.25) / sqrt(0.25 * 0.75).
    assert ev.heat_nss(g, fix) == pytest.approx(0.75 / np.sqrt(0.1875))
    assert ev.heat_auc_judd(g, fix) == pytest.approx(1.0)
    assert ev.heat_auc_judd(1 - g, fix) == pytest.approx(0.125)  # ROC rises only at fp = 1: one triangle
    big = np.zeros((100, 100), bool)
    big[:, :50] = True
    assert ev.heat_auc_judd(np.ones((100, 100)), big) == pytest.approx(0.5, abs=0.02)  # ties broken at random
    assert np.isnan(ev.heat_auc_judd(g, np.zeros((4, 4), bool)))
    m = ev.heatmap_metrics([g, np.full((4, 4), 0.1)], [g, np.zeros((4, 4))])
    assert m["n_images"] == 2 and m["n_empty"] == 1
    assert m["mse_empty"] == pytest.approx(0.01) and m["mse_all"] == pytest.approx(0.005)
    assert m["cc"] == pytest.approx(1.0) and m["auc_judd"] == pytest.approx(1.0)


def test_pairwise_accuracy_hand_computed():
    perfect = ev.pairwise_accuracy([[5.0, 4.0, 3.0, 2.0]])
    assert perfect["accuracy"] == 1.0 and perfect["n_pairs"] == 6
    one_swap = ev.pairwise_accuracy([[5.0, 3.0, 4.0]])  # clean beats both; milder (3) loses to stronger (4)
    assert one_swap["clean_vs_degraded"] == 1.0 and one_swap["milder_vs_stronger"] == 0.0
    assert one_swap["accuracy"] == pytest.approx(2 / 3)
    assert ev.pairwise_accuracy([[3.0, 3.0]])["accuracy"] == 0.0  # ties are wrong


def test_errors_by_group_hand_computed():
    true = np.full((3, 5), 4.0)
    pred = true + np.array([[1.0], [-1.0], [0.5]])  # sample 0 too high by 1, sample 1 too low by 1, 2 by 0.5
    samples = [{"method": "light", "artifacts": [("blur", 0.5, 0.2, 1.0), ("noise", 0.3, 0.1, 1.0)]},
               {"method": "light", "artifacts": [("blur", 0.9, 0.3, 1.0)]},
               {"method": "max", "artifacts": []}]
    g = ev.errors_by_group(pred, true, samples)
    assert set(g) == {"artifact blur", "artifact noise", "artifact clean", "method light", "method max"}
    assert g["artifact blur"]["n"] == 2 and g["artifact blur"]["bias"]["Overall"] == pytest.approx(0.0)
    assert g["artifact blur"]["mae"]["Overall"] == pytest.approx(1.0)
    assert g["artifact noise"]["bias"]["Thermal Retention"] == pytest.approx(1.0)
    assert g["artifact clean"]["bias"]["Sharpness"] == pytest.approx(0.5)
    assert ev.errors_by_group(pred, true, [{}, {}, {}]) == {}  # human ratings carry no provenance
    assert "Where the scores go wrong" in ev.markdown_report(
        {"n_samples": 3, "scores": ev.score_correlations(pred, true), "errors_by_group": g,
         "heatmap": ev.heatmap_metrics([np.zeros((2, 2))], [np.zeros((2, 2))])})


def test_rank_check_counts_and_names_the_failing_pairs(demo_set):
    class Judge:
        """Overall scores of (light, IR alone, visible alone, blurred average), one row per pair in stem order."""

        rows = iter([[4.5, 2.0, 3.0, 4.0], [4.0, 2.0, 4.5, 3.0], [4.0, 2.0, 3.0, 4.0], [4.2, 1.0, 1.0, 1.0]])

        def predict(self, fused, ir, vis):
            assert fused.shape[0] == 4 and ir.shape == fused.shape == vis.shape
            scores = torch.full((4, 5), 3.0)
            scores[:, DIMENSIONS.index("Overall")] = torch.tensor(next(self.rows))
            return {"scores": scores}

    r = ev.rank_check(Judge(), demo_set, progress=False)
    assert r["n_pairs"] == 4
    assert r["ir_alone"] == 1.0 and r["vis_alone"] == 0.75 and r["blurred_average"] == 0.75 and r["all"] == 0.5
    assert set(r["failures"]) == {"p1", "p2"}  # visible alone wins on p1; a tie with the blurred average on p2
    assert r["failures"]["p1"]["vis_alone"] == 4.5
    md = ev.markdown_report({"n_samples": 0, "scores": {}, "heatmap": ev.heatmap_metrics([], []),
                             "rank_check": {"demo": {k: v for k, v in r.items() if k != "overall"}}})
    assert "| demo | p1 | 4.00 | 2.00 | 4.50 | 3.00 |" in md


def test_plcc_intervals_resample_source_pairs():
    g = np.random.default_rng(0)
    true = g.uniform(1, 5, (80, 5))
    keys = [f"set/p{i // 8}" for i in range(80)]  # ten pairs, eight images each
    exact = ev.plcc_intervals(true, true, keys, n_boot=200)
    assert all(lo == pytest.approx(1.0) and hi == pytest.approx(1.0) for lo, hi in exact.values())
    noisy = true + g.normal(0, 1.0, true.shape)
    ci = ev.plcc_intervals(noisy, true, keys, n_boot=200)
    for k, name in enumerate(DIMENSIONS):
        lo, hi = ci[name]
        assert lo < ev.plcc(noisy[:, k], true[:, k]) < hi and hi - lo > 0.02
    # One pair whose images disagree with their labels moves the estimate a lot: whole pairs are resampled.
    odd = noisy.copy()
    odd[:8] = 6 - true[:8]
    lo_odd, hi_odd = ev.plcc_intervals(odd, true, keys, n_boot=200)["Overall"]
    assert hi_odd - lo_odd > ci["Overall"][1] - ci["Overall"][0]


def test_within_method_plcc_ignores_differences_between_methods():
    """Predictions that only know each method's mean correlate overall but not within a method."""
    g = np.random.default_rng(1)
    methods = ["average"] * 40 + ["max"] * 40 + ["tiny"] * 3
    offset = np.array([0.0 if m == "max" else -1.5 for m in methods])
    true = 4 + offset[:, None] + g.uniform(-0.5, 0.5, (83, 5))
    method_means = 4 + offset[:, None] + np.zeros((83, 5))
    blind = method_means + g.normal(0, 0.01, (83, 5))  # right per method, random within
    assert ev.plcc(blind[:, 0], true[:, 0]) > 0.8
    within = ev.within_group_plcc(blind, true, methods)
    assert set(within) == set(DIMENSIONS) and all(abs(v) < 0.4 for v in within.values())
    assert all(v == pytest.approx(1.0) for v in ev.within_group_plcc(true, true, methods).values())
    assert math.isnan(ev.within_group_plcc(true, true, methods, min_size=100)["Overall"])  # all groups too small


def test_dimension_map_metrics_hand_computed():
    truth = torch.zeros(4, 2, 2)
    truth[0, 0, 0] = 1.0  # Thermal damaged in one corner; the other three maps flat
    exact = {"dimension_maps": truth.clone()}
    inverted = {"dimension_maps": 1.0 - truth}
    res = ev.dimension_map_metrics([exact, inverted], [{"dimension_maps": truth}] * 2)
    assert res["Thermal Retention"]["cc"] == pytest.approx(0.0)  # +1 and -1
    assert res["Thermal Retention"]["n_cc"] == 2 and res["Texture Preservation"]["n_cc"] == 0
    assert math.isnan(res["Texture Preservation"]["cc"])
    assert res["Thermal Retention"]["mse"] == pytest.approx(0.5)  # 0 and 1 per pixel
    assert res["Sharpness"]["mse"] == pytest.approx(0.5)  # inverted flat map: every pixel off by 1
    assert ev.dimension_map_metrics([{"scores": 0}], [{"dimension_maps": truth}]) == {}


def test_overlay_and_report(model, tmp_path):
    img = torch.rand(1, 20, 30)
    heat = torch.zeros(1, 10, 15)
    assert torch.allclose(ev.heatmap_overlay(img, heat), img.expand(3, -1, -1))
    heat[:, 2:5, 2:5] = 1
    assert ev.heatmap_overlay(img, heat).shape == (3, 20, 30)
    samples = [{"fused": torch.rand(3, 24, 32), "ir": torch.rand(1, 24, 32), "vis": torch.rand(3, 24, 32),
                "heatmap": (torch.rand(1, 24, 32) > 0.7).float() * k / 4, "scores": torch.full((5,), 1.0 + k)}
               for k in range(4)]
    lad = [[{**samples[0], "scores": torch.full((5,), 5.0)}, samples[1]]]
    res = ev.evaluate_reward(model, samples, tmp_path / "eval", ladders=lad, examples=2, progress=False)
    assert set(res["scores"]) == set(DIMENSIONS) and res["heatmap"]["n_empty"] == 1
    assert "plcc_ci95" not in res["scores"]["Overall"]  # no source-pair keys: no interval
    assert res["pairwise"]["n_pairs"] == 1
    assert (tmp_path / "eval" / "reward_eval.json").is_file() and (tmp_path / "eval" / "reward_eval.md").is_file()
    assert len(list((tmp_path / "eval" / "examples").glob("*.png"))) == 2


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _tiny_cfg(data: Path, out: Path) -> dict:
    cfg = json.loads((REPO / "training" / "configs" / "reward_small.json").read_text())
    cfg.update({"data": [str(data)], "methods": ["average", "max"], "model": {"preset": "small", **TINY},
                "steps": 4, "batch_size": 2, "warmup": 1, "checkpoint_every": 2, "val_every": 0, "val_samples": 0,
                "split": {"test_fraction": 0.25, "seed": 0}, "threads": 1, "out": str(out)})
    return cfg


def test_training_on_sources_at_two_sizes_alternates_them(demo_set, tmp_path):
    from evafusion_core.data.synthetic import SyntheticRewardData, load_sources
    from evafusion_core.reward.train import _SyntheticBatches, train

    cfg = {**_tiny_cfg(demo_set, tmp_path / "two"), "source_sizes": [64, 40]}
    train(cfg, device="cpu", progress=False)
    assert (tmp_path / "two" / "sources_64.pt").is_file() and (tmp_path / "two" / "sources_40.pt").is_file()
    assert (tmp_path / "two" / "final" / "model.safetensors").is_file()
    big, small = (SyntheticRewardData(load_sources([demo_set], ("average",), size=s, progress=False), seed=0)
                  for s in (64, 40))
    batches = _SyntheticBatches([big, small], world=1)
    assert [batches.batch(k, 0, 2)["fused"].shape[-1] for k in range(4)] == [64, 40, 64, 40]
    for bad in ([64, "40"], [16], 64):
        with pytest.raises(ValueError, match="source_sizes must be a list"):
            train({**cfg, "source_sizes": bad}, device="cpu", progress=False)


def test_resume_is_equivalent_to_an_uninterrupted_run(demo_set, tmp_path):
    from safetensors.torch import load_file

    from evafusion_core.reward.train import train

    full = train(_tiny_cfg(demo_set, tmp_path / "full"), device="cpu", progress=False)
    part = _tiny_cfg(demo_set, tmp_path / "part")
    train(part, device="cpu", stop_after=2, progress=False)
    assert (tmp_path / "part" / "checkpoint.pt").is_file() and not (tmp_path / "part" / "final").exists()
    with open(tmp_path / "part" / "log.jsonl", "a") as f:  # as if killed after logging step 3, before its checkpoint
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    train(part, device="cpu", resume=True, progress=False)
    a = load_file(str(full / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in logged)
    from PIL import Image

    with Image.open(tmp_path / "part" / "plot.png") as img:  # the training plot, redrawn at each checkpoint
        assert img.format == "PNG" and img.width >= 360


def test_a_fine_tune_with_frozen_features_moves_only_the_heads(model, demo_set, tmp_path):
    """freeze "features" trains the score heads alone: the heatmap decoder, the backbone and every
    normalisation statistic stay as saved; an unknown value is refused by name."""
    from safetensors.torch import load_file

    from evafusion_core.reward.train import train

    model.save_pretrained(tmp_path / "rm")
    cfg = {**_tiny_cfg(demo_set, tmp_path / "ft"), "init": str(tmp_path / "rm"), "freeze": "features", "lr": 1e-2}
    train(cfg, device="cpu", progress=False)
    before = load_file(str(tmp_path / "rm" / "model.safetensors"))
    after = load_file(str(tmp_path / "ft" / "final" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("heads.") for k in changed)
    train({**cfg, "freeze": None, "out": str(tmp_path / "all")}, device="cpu", progress=False)
    moved = load_file(str(tmp_path / "all" / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.endswith("running_mean"))
    with pytest.raises(ValueError, match="freeze must be one of"):
        train({**cfg, "freeze": "backbone", "out": str(tmp_path / "bad")}, device="cpu", progress=False)


def test_reward_plot_panels_follow_the_log():
    from evafusion_core.reward.train import reward_panels

    recs = [{"step": i, "loss": 1.0 / i, "score_mse": 0.1, "heatmap_mse": 0.02, "heatmap_bce": 0.4, "lr": 1e-3}
            for i in range(1, 5)]
    val = {"plcc_tr": 0.5, "plcc_tp": 0.6, "plcc_ar": 0.7, "plcc_sh": 0.8, "plcc_ov": 0.9, "heat_cc": 0.7,
           "heat_auc": 0.9}
    recs[-1]["val"] = val
    panels = reward_panels(recs)
    assert panels["loss"]["total"] == ([1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25])
    assert panels["validation PLCC"]["Overall"] == ([4], [0.9]) and len(panels["validation PLCC"]) == 5
    assert "ranking loss (preferences)" not in panels
    assert "ranking loss (preferences)" in reward_panels([{**recs[0], "ranking": 0.7}])


def test_data_workers_give_the_same_run_as_the_main_process(demo_set, tmp_path):
    """Batches built ahead in two DataLoader workers (a run resumed part-way, too) train the same weights."""
    from safetensors.torch import load_file

    from evafusion_core.reward.train import train

    plain = train(_tiny_cfg(demo_set, tmp_path / "plain"), device="cpu", progress=False)
    ahead = {**_tiny_cfg(demo_set, tmp_path / "ahead"), "workers": 2}
    train(ahead, device="cpu", stop_after=1, progress=False)
    train(ahead, device="cpu", resume=True, progress=False)
    a = load_file(str(plain / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "ahead" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_data_workers_default_to_none_on_cpu_and_some_on_a_gpu(monkeypatch):
    from evafusion_core.reward.train import data_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert data_workers(None, torch.device("cpu")) == 0 and data_workers("auto", torch.device("cpu")) == 0
    assert data_workers(None, torch.device("cuda")) == 8 and data_workers("auto", torch.device("cuda"), world=4) == 3
    assert data_workers(3, torch.device("cpu")) == 3 and data_workers(-1, torch.device("cuda")) == 0


def test_fit_to_budget_uses_the_pace_after_start_up():
    from evafusion_core.reward.train import fit_to_budget

    # Five slow start-up steps are ignored: 0.5 s per step, 95% of 100 s left -> 190 more steps.
    assert fit_to_budget(100.0, [10.0] * 5 + [0.5] * 20, done=25) == 25 + 190
    assert fit_to_budget(0.0, [1.0] * 30, done=30) == 31  # at least one more step


def test_time_budget_fixes_the_step_count_and_a_resumed_run_keeps_it(demo_set, tmp_path, monkeypatch):
    from evafusion_core.reward import train as train_mod

    calls = []

    def fitted(seconds_left, step_seconds, done):  # the pace on a shared CI machine is not ours to fix
        calls.append((seconds_left, len(step_seconds), done))
        return 30

    monkeypatch.setattr(train_mod, "fit_to_budget", fitted)
    cfg = {**_tiny_cfg(demo_set, tmp_path / "run"), "warmup": 20, "time_budget_s": 600.0, "checkpoint_every": 5}
    del cfg["steps"]
    with pytest.raises(ValueError, match="warm-up of at least 20"):
        train_mod.train({**cfg, "warmup": 5}, device="cpu", progress=False)
    train_mod.train(cfg, device="cpu", stop_after=25, progress=False)
    assert len(calls) == 1 and calls[0][1:] == (20, 20) and 0 < calls[0][0] < 600  # sized once, after the warm-up
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["extra"]["total"] == 30
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 30
    train_mod.train(cfg, device="cpu", resume=True, progress=False)
    assert len(calls) == 1  # the resumed run kept the fitted count
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31)) and (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_time_budget_refits_the_step_count_on_the_wall_clock_pace_in_the_first_half(demo_set, tmp_path, monkeypatch):
    """The warm-up's step times miss validation and checkpoints; each checkpoint in the first half of the run
    fits the count again on the pace the run has really kept."""
    from evafusion_core.reward import train as train_mod

    calls = []

    def fitted(seconds_left, step_seconds, done):
        calls.append((done, list(step_seconds)))
        return 100 if len(calls) == 1 else 36  # slower than the warm-up promised

    monkeypatch.setattr(train_mod, "fit_to_budget", fitted)
    cfg = {**_tiny_cfg(demo_set, tmp_path / "run"), "warmup": 20, "time_budget_s": 600.0, "checkpoint_every": 5}
    del cfg["steps"]
    train_mod.train(cfg, device="cpu", progress=False)
    # Sized at step 20 (100 steps, so re-fitted up to step 50); re-fitted at 25, 30 and 35, where it ends.
    assert [d for d, _ in calls] == [20, 25, 30, 35]
    assert len(calls[0][1]) == 20 and all(len(p) == 1 and p[0] > 0 for _, p in calls[1:])  # one wall-clock pace
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 37)) and (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["extra"]["total"] == 36
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 36


def test_two_process_ddp_smoke_run_on_gloo(demo_set, tmp_path):
    """Two processes on a mix of synthetic data and a feedback folder (ratings and a preference), with the
    step count fitted to a time budget, on which the two ranks must agree."""
    from evafusion_core.feedback import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback")
    for k in range(2):
        f, ir, vis = torch.rand(3, 32, 40), torch.rand(1, 32, 40), torch.rand(3, 32, 40)
        store.add_rating(f, ir, vis, [2 + k] * 5, annotator="ana")
    store.add_preference(f, f.flip(-1), ir, vis, "A", annotator="ana")
    cfg = _tiny_cfg(demo_set, tmp_path / "ddp")
    del cfg["steps"]
    cfg.update({"warmup": 20, "time_budget_s": 3.0, "checkpoint_every": 1000})
    cfg["sources"] = [{"kind": "synthetic", "weight": 1.0}, {"kind": "feedback", "path": str(store.root),
                                                             "weight": 1.0}]
    cfg["loss"]["ranking"] = 1.0
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "training" / "train_reward.py"), "--config", str(cfg_path), "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "ddp"
    saved = json.loads((out / "config.json").read_text())
    assert saved["world_size"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    total = saved["steps"]
    assert total > 20 and [r["step"] for r in log] == list(range(1, total + 1))
    assert all(np.isfinite(r["loss"]) for r in log) and all(np.isfinite(r["ranking"]) for r in log)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == state["extra"]["total"] == total
    assert load_reward_model(str(out / "final")).image_size == 64


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def test_score_cli_json_and_heatmaps(model, demo_set, tmp_path, capsys):
    from evafusion_core.cli import main

    model.save_pretrained(tmp_path / "rm")
    rc = main(["score", "--ir", str(demo_set / "ir"), "--vis", str(demo_set / "vi"), "--fused",
               str(demo_set / "fused"), "--model", str(tmp_path / "rm"), "--device", "cpu",
               "--heatmap-out", str(tmp_path / "heat"), "--json", str(tmp_path / "scores.json")])
    assert rc == 0
    result = json.loads((tmp_path / "scores.json").read_text())
    assert set(result) == {"images", "mean"}
    assert set(result["images"]) == {"p0", "p1", "p2", "p3"}
    for scores in [*result["images"].values(), result["mean"]]:
        assert list(scores) == list(DIMENSIONS) and all(1 <= v <= 5 for v in scores.values())
    from PIL import Image

    heat = Image.open(tmp_path / "heat" / "p0.png")
    assert heat.mode == "L" and heat.size == (56, 40)
    assert "Overall" in capsys.readouterr().out
    # A single file triple works too.
    rc = main(["score", "--ir", str(demo_set / "ir" / "p1.png"), "--vis", str(demo_set / "vi" / "p1.png"),
               "--fused", str(demo_set / "fused" / "p1.png"), "--model", str(tmp_path / "rm"), "--device", "cpu",
               "--json", str(tmp_path / "one.json")])
    assert rc == 0 and list(json.loads((tmp_path / "one.json").read_text())["images"]) == ["p1"]


def test_score_cli_goes_past_bad_triples_and_names_a_missing_folder(model, demo_set, tmp_path, capsys):
    from evafusion_core.cli import main

    model.save_pretrained(tmp_path / "rm")
    fused = tmp_path / "fused"
    shutil.copytree(demo_set / "fused", fused)
    (fused / "p1.png").write_bytes(b"not a png")
    args = ["--model", str(tmp_path / "rm"), "--device", "cpu", "--json", str(tmp_path / "scores.json")]
    rc = main(["score", "--ir", str(demo_set / "ir"), "--vis", str(demo_set / "vi"), "--fused", str(fused), *args])
    err = capsys.readouterr().err
    assert rc == 1 and "1 triple(s) skipped" in err and "p1: " in err and "p1.png" in err
    assert set(json.loads((tmp_path / "scores.json").read_text())["images"]) == {"p0", "p2", "p3"}
    rc = main(["score", "--ir", str(demo_set / "ir"), "--vis", str(tmp_path / "nope"), "--fused", str(fused), *args])
    assert rc == 2 and f"--vis {tmp_path / 'nope'}: no such file or folder" in capsys.readouterr().err


def test_heatmap_by_artifact_groups_single_and_several_artifacts():
    from evafusion_core.data.synthetic import ArtifactSpec, SourcePair, make_sample

    g = torch.Generator().manual_seed(0)
    u8 = lambda t: t.mul(255).round().to(torch.uint8)
    pair = SourcePair("d/p", u8(torch.rand(1, 48, 64, generator=g)), u8(torch.rand(3, 48, 64, generator=g)),
                      {"avg": u8(torch.rand(1, 48, 64, generator=g))})
    specs = [[ArtifactSpec("halo", 0.8, 1)], [ArtifactSpec("noise", 0.8, 2)], [ArtifactSpec("noise", 0.6, 3)],
             [ArtifactSpec("halo", 0.8, 4), ArtifactSpec("noise", 0.8, 5)], []]
    samples = [make_sample(pair, "avg", sp, colour=False) for sp in specs]
    perfect = [{"heatmap": s["heatmap"]} for s in samples]
    flat = [{"heatmap": torch.zeros_like(s["heatmap"])} for s in samples]
    good, none = ev.heatmap_by_artifact(perfect, samples), ev.heatmap_by_artifact(flat, samples)
    assert set(good) <= {"halo", "noise", "several"} and "clean" not in good
    assert all(m["auc_judd"] > 0.99 for m in good.values())
    assert all(abs(m["auc_judd"] - 0.5) < 0.05 for m in none.values())
    assert sum(m["n"] for m in good.values()) <= 4


def test_synthetic_eval_set_train_split_is_the_pairs_training_saw(demo_set):
    def keys(split: str, fraction: float) -> list[str]:
        return ev.synthetic_eval_set([demo_set], split=split, test_fraction=fraction, per_pair=1,
                                     ladders_per_pair=0, progress=False)[2]

    every = keys("all", 0.5)
    assert len(every) == 4
    assert keys("train", 0.0) == every  # nothing held out: training saw every pair
    assert keys("test", 1.0) == every
    with pytest.raises(ValueError, match="no train pairs"):
        keys("train", 1.0)
    with pytest.raises(ValueError, match="no test pairs"):
        keys("test", 0.0)


def test_tune_heatmap_blur_picks_by_auc_within_the_cc_tolerance(model, demo_set, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "training"))
    import tune_heatmap_blur as tune

    table = {0.0: {"cc": 0.80, "auc_judd": 0.94}, 0.01: {"cc": 0.79, "auc_judd": 0.95},
             0.05: {"cc": 0.70, "auc_judd": 0.97}}
    assert tune.choose(table, 0.02) == 0.01  # 0.05 has the best AUC but costs too much CC
    assert tune.choose(table, 0.2) == 0.05
    model.save_pretrained(tmp_path / "rm")
    rc = tune.main(["--model", str(tmp_path / "rm"), "--data", str(demo_set), "--size", "32", "--per-pair", "3",
                    "--sigmas", "0", "0.05", "--device", "cpu", "--json", str(tmp_path / "blur.json")])
    assert rc == 0
    res = json.loads((tmp_path / "blur.json").read_text())
    assert set(res["table"]) == {"0.0", "0.05"} and res["choice"] in (0.0, 0.05)
    assert all(0.0 <= m["auc_judd"] <= 1.0 for m in res["table"].values())
    assert "choice: heatmap_blur" in capsys.readouterr().out


def test_pooled_is_what_the_heads_read(model):
    out = model(torch.rand(2, 3, 40, 56), torch.rand(2, 1, 40, 56), torch.rand(2, 3, 40, 56))
    again = torch.cat([torch.sigmoid(h(out["pooled"])) for h in model.heads], dim=1)
    assert torch.allclose(again, out["scores"], atol=1e-6)


def test_rich_pooling_starts_where_the_basic_heads_were(model, tmp_path):
    """Widened heads compute exactly the trained heads' scores (the new inputs start at zero weight),
    read more than they did, and keep their pooling through save and load."""
    from evafusion_core.reward.refit import with_head_pooling

    wide = with_head_pooling(model, "rich")
    x = (torch.rand(2, 3, 40, 56), torch.rand(2, 1, 40, 56), torch.rand(2, 3, 40, 56))
    a, b = model(*x), wide(*x)
    n = a["pooled"].shape[1]
    assert b["pooled"].shape[1] == n + 2 * 32 + 2 * 16  # max and weighted token means, decoder means
    assert torch.allclose(b["pooled"][:, :n], a["pooled"], atol=1e-6)
    assert torch.allclose(b["scores"], a["scores"], atol=1e-6)
    assert torch.equal(b["heatmap_logits"], a["heatmap_logits"])
    again = torch.cat([torch.sigmoid(h(b["pooled"])) for h in wide.heads], dim=1)
    assert torch.allclose(again, b["scores"], atol=1e-6)  # the wider input is what the heads read
    wide.save_pretrained(tmp_path / "wide")
    loaded = load_reward_model(tmp_path / "wide")
    assert loaded.head_pooling == "rich"
    assert torch.allclose(loaded(*x)["scores"], a["scores"], atol=1e-6)
    with pytest.raises(ValueError, match="only widen heads that read basic"):
        with_head_pooling(loaded, "basic")
    with pytest.raises(ValueError, match="head_pooling must be one of"):
        create_reward_model("small", **TINY, head_pooling="fancy")


def _hot_textured(h: int = 64, w: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """IR: cool with one hot box; visible: mid grey with fine texture the IR lacks."""
    g = torch.Generator().manual_seed(3)
    ir = torch.full((1, 1, h, w), 0.2)
    ir[..., 20:40, 30:50] = 0.9
    vis = (0.4 + 0.1 * torch.randn(1, 1, h, w, generator=g)).clamp(0, 1)
    return ir, vis


def test_retention_cues_measure_what_the_labels_charge():
    """The cues' thermal and texture deficits are the labels' own (retention_deficits, "targets" threshold),
    per image in a batch; the IR image alone keeps every hot pixel, the visible image alone none."""
    from evafusion_core.data.synthetic import MIN_TARGET_AREA, retention_deficits
    from evafusion_core.reward.cues import RETENTION_CUES, retention_cues

    ir, vis = _hot_textured()
    fusions = {"max": torch.maximum(ir, vis), "average": (ir + vis) / 2, "vis": vis, "ir": ir}
    batch = torch.cat(list(fusions.values()))
    cues = retention_cues(batch.expand(-1, 3, -1, -1), ir.expand(4, -1, -1, -1), vis.expand(4, 3, -1, -1))
    assert cues.shape == (4, len(RETENTION_CUES)) and torch.isfinite(cues).all()
    col = {name: RETENTION_CUES.index(name) for name in ("hot share", "thermal deficit", "texture deficit")}
    for row, f in zip(cues, fusions.values()):
        thermal, texture = retention_deficits(f[0], ir[0], vis[0], MIN_TARGET_AREA["targets"])
        assert float(row[col["thermal deficit"]]) == pytest.approx(thermal, abs=1e-4)
        assert float(row[col["texture deficit"]]) == pytest.approx(texture, abs=1e-4)
    share = cues[:, col["hot share"]].tolist()
    assert share[0] == pytest.approx(1.0) and share[3] == pytest.approx(1.0) and share[2] == pytest.approx(0.0)
    assert 0.3 < share[1] < 0.7
    flat = torch.full((1, 1, 64, 80), 0.5)  # no hot target, no detail: nothing to lose
    none = retention_cues(flat, flat, flat)[0]
    assert float(none[col["hot share"]]) == 1.0 and float(none[col["thermal deficit"]]) == 0.0
    assert torch.isfinite(none).all()


def test_quality_cues_see_blur_noise_blocks_and_colour_where_they_are():
    """Each map's worst tile moves the right way for the damage it is named for, in one corner of the frame,
    and a fusion equal to its sharper source shows no damage."""
    from evafusion_core.data.synthetic import gaussian_blur
    from evafusion_core.reward.cues import QUALITY_CUES, quality_cues

    g = torch.Generator().manual_seed(5)
    vis = (0.5 + 0.15 * torch.randn(1, 3, 96, 96, generator=g)).clamp(0, 1)
    vis = gaussian_blur(vis[0], 0.7).unsqueeze(0)
    ir = torch.full((1, 1, 96, 96), 0.3)
    corner = (..., slice(0, 32), slice(0, 32))
    blurred, noisy, blocky, cast = vis.clone(), vis.clone(), vis.clone(), vis.clone()
    blurred[corner] = gaussian_blur(vis[0], 2.0).unsqueeze(0)[corner]
    noisy[corner] = (vis[corner] + 0.1 * torch.randn(1, 3, 32, 32, generator=g)).clamp(0, 1)
    blocks = torch.nn.functional.avg_pool2d(vis[corner], 8)
    blocky[corner] = blocks.repeat_interleave(8, -2).repeat_interleave(8, -1)
    cast[corner] = (vis[corner] + torch.tensor([0.15, 0.0, -0.15]).view(1, 3, 1, 1)).clamp(0, 1)
    fused = torch.cat([vis, blurred, noisy, blocky, cast])
    cues = quality_cues(fused, ir.expand(5, -1, -1, -1), vis.expand(5, -1, -1, -1))
    assert cues.shape == (5, len(QUALITY_CUES)) and torch.isfinite(cues).all()
    col = {name: QUALITY_CUES.index(name) for name in QUALITY_CUES}
    clean = cues[0]
    assert float(clean[col["fine detail kept: worst tile"]]) == pytest.approx(1.0, abs=1e-4)
    assert float(clean[col["fine detail in excess: worst tile"]]) == pytest.approx(0.0, abs=1e-6)
    assert float(cues[1, col["fine detail kept: worst tile"]]) < 0.6  # blur
    assert float(cues[1, col["fine detail kept: mean"]]) > float(cues[1, col["fine detail kept: worst tile"]])
    assert float(cues[2, col["fine detail in excess: worst tile"]]) > 0.02  # noise
    assert float(cues[3, col["flat pixels in excess: worst tile"]]) > 0.3  # blocks
    assert float(cues[4, col["colour shift: worst tile"]]) > 0.1 > float(clean[col["colour shift: worst tile"]])


def _blurred_and_ghosted(ir_blur: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, int]]:
    """A textured visible image, an IR one blurred by ``ir_blur`` (sigma, px), and fusions equal to the
    visible image except in one corner:
    clean, blurred, a shifted copy of itself (ghost) and a shifted copy of the IR (IR ghost)."""
    from evafusion_core.data.synthetic import gaussian_blur

    g = torch.Generator().manual_seed(5)
    vis = gaussian_blur((0.5 + 0.15 * torch.randn(3, 128, 128, generator=g)).clamp(0, 1), 0.7).unsqueeze(0)
    ir = gaussian_blur((0.3 + 0.1 * torch.randn(1, 128, 128, generator=g)).clamp(0, 1), ir_blur).unsqueeze(0)
    corner = (..., slice(0, 48), slice(0, 48))
    fusions = [vis.clone() for _ in range(4)]
    fusions[1][corner] = gaussian_blur(vis[0], 1.5).unsqueeze(0)[corner]
    fusions[2][corner] = (0.6 * vis + 0.4 * vis.roll((2, 3), (-2, -1)))[corner]
    fusions[3][corner] = (0.6 * vis + 0.4 * ir.roll((2, 3), (-2, -1)))[corner]
    return torch.cat(fusions), ir.expand(4, -1, -1, -1), vis.expand(4, -1, -1, -1), {
        "clean": 0, "blur": 1, "ghost": 2, "ir ghost": 3}


def test_blur_cues_find_a_blurred_corner_and_not_a_ghost():
    """Blurring a sixth of the frame shows as lost crispness over about that share of it and in the worst
    patch; a clean fusion and a ghosted one (sharp, only doubled) show little. The IR is the softer source."""
    from evafusion_core.reward.cues import BLUR_CUES, blur_cues

    fused, ir, vis, row = _blurred_and_ghosted(ir_blur=1.5)
    cues = blur_cues(fused, ir, vis)
    assert cues.shape == (4, len(BLUR_CUES)) and torch.isfinite(cues).all()
    for band in ("fine", "mid"):
        worst = cues[:, BLUR_CUES.index(f"{band}: worst patch crispness lost (vs crisper source)")]
        share = cues[:, BLUR_CUES.index(f"{band}: crispness under 0.5 (vs crisper source)")]
        assert float(worst[row["blur"]]) > 0.5 > 0.2 > max(float(worst[row["clean"]]), float(worst[row["ghost"]]))
        assert 0.07 < float(share[row["blur"]]) < 0.2 and float(share[row["clean"]]) < 0.01


def test_ghosting_cues_find_a_shifted_copy_of_the_fusion_or_the_ir():
    """A faint copy a few pixels away makes the worst tiles self-similar beyond what the sources are; a copy
    of the IR makes them resemble the shifted IR. A clean fusion shows neither. The IR is as textured as the
    visible image, so that its copy is not drowned by the visible detail."""
    from evafusion_core.reward.cues import GHOSTING_CUES, ghosting_cues

    fused, ir, vis, row = _blurred_and_ghosted(ir_blur=0.7)
    cues = ghosting_cues(fused, ir, vis)
    assert cues.shape == (4, len(GHOSTING_CUES)) and torch.isfinite(cues).all()
    self_sim = cues[:, GHOSTING_CUES.index("self-similarity beyond the sources': worst 3 tiles")]
    to_ir = cues[:, GHOSTING_CUES.index("similarity to the shifted IR beyond expected: worst 3 tiles")]
    assert float(self_sim[row["ghost"]]) > 0.25 > 0.05 > float(self_sim[row["clean"]])
    assert float(to_ir[row["ir ghost"]]) > float(to_ir[row["clean"]]) + 0.2


def test_cue_groups_of_one_pair_are_measured_once_with_the_same_numbers():
    """A batch of fusions of one source pair (a GRPO group) has the sources' half of every cue group measured once;
    the numbers are those of each fusion measured alone, and a batch of different pairs is measured as before."""
    from evafusion_core.reward.cues import CUE_GROUPS, measure_cue_groups

    fused, ir, vis, _ = _blurred_and_ghosted(ir_blur=0.7)
    groups = list(CUE_GROUPS)
    alone = torch.cat([measure_cue_groups(groups, fused[k:k + 1], ir[:1], vis[:1]) for k in range(4)])
    assert torch.allclose(measure_cue_groups(groups, fused, ir.clone(), vis.clone()), alone, atol=1e-6)
    assert torch.allclose(measure_cue_groups(groups, fused, ir, vis), alone, atol=1e-6)  # expanded views
    other = torch.cat([ir[:3], ir[3:].flip(-1)])  # the last fusion has other sources
    last = measure_cue_groups(groups, fused[3:], other[3:], vis[3:])
    assert torch.allclose(measure_cue_groups(groups, fused, other, vis)[3], last[0], atol=1e-6)


def test_cue_inputs_start_where_the_heads_were(model, tmp_path):
    """Heads widened to read cue groups compute the trained heads' scores until refit; each group's scale is
    set once from fit features (and applied to them), a later group keeps the earlier one's, and both
    survive save and load."""
    from evafusion_core.reward.cues import QUALITY_CUES, RETENTION_CUES
    from evafusion_core.reward.refit import cue_columns, set_cue_scale, with_cue_inputs

    wide = with_cue_inputs(model, ["retention"])
    x = (torch.rand(3, 3, 40, 56), torch.rand(3, 1, 40, 56), torch.rand(3, 3, 40, 56))
    a, b = model(*x), wide(*x)
    k = len(RETENTION_CUES)
    assert b["pooled"].shape[1] == a["pooled"].shape[1] + k
    assert torch.allclose(b["scores"], a["scores"], atol=1e-6)
    feats = b["pooled"].detach().clone()
    raw = feats[:, -k:].clone()
    set_cue_scale(wide, "retention", feats)
    assert torch.allclose(feats[:, -k:], (raw - raw.mean(0)) / raw.std(0).clamp(min=1e-3), atol=1e-5)
    assert torch.allclose(wide(*x)["pooled"], feats, atol=1e-4)  # the model now standardises as the features are
    with pytest.raises(ValueError, match="already standardised"):
        set_cue_scale(wide, "retention", feats)
    both = with_cue_inputs(wide, ["retention", "quality"])
    assert both.cue_inputs == ("retention", "quality")
    assert cue_columns(both, "quality") == slice(k, k + len(QUALITY_CUES))
    assert torch.equal(both.cue_std[:k], wide.cue_std) and torch.all(both.cue_std[k:] == 1)
    assert torch.allclose(both(*x)["scores"], wide(*x)["scores"], atol=1e-6)
    both.save_pretrained(tmp_path / "cues")
    loaded = load_reward_model(tmp_path / "cues")
    assert loaded.cue_inputs == ("retention", "quality") and torch.equal(loaded.cue_std, both.cue_std)
    assert torch.allclose(loaded(*x)["scores"], wide(*x)["scores"], atol=1e-6)
    with pytest.raises(ValueError, match="cue_inputs"):
        create_reward_model("small", **TINY, cue_inputs=["retention", "smell"])


def test_fit_heads_learns_a_known_target_and_keeps_the_best_validation_step():
    from evafusion_core.reward.refit import fit_heads

    torch.manual_seed(0)
    heads = tiny_model().heads
    n_in = heads[0][0].in_features
    w = torch.randn(n_in, 5) / n_in**0.5
    x = torch.randn(600, n_in)
    y = 0.2 + 0.8 * torch.sigmoid(x @ w)  # a target in the heads' 0.2..1 label range
    fitted, rec = fit_heads(heads, (x[:400], y[:400]), (x[400:], y[400:]), steps=300, lr=1e-2, every=20,
                            progress=False)
    assert all(r > 0.9 for r in rec["val_plcc_after"]), rec["val_plcc_after"]
    assert all(a > b for a, b in zip(rec["val_plcc_after"], rec["val_plcc_before"]))
    for k, step in enumerate(rec["chosen_step"]):  # each head kept at its own best check
        assert max(c["val_plcc"][k] for c in rec["curve"]) == rec["val_plcc_after"][k]
        assert step in {c["step"] for c in rec["curve"]}
    with torch.no_grad():
        assert not torch.equal(fitted[0][0].weight, heads[0][0].weight)  # a copy is trained, the input kept
    with pytest.raises(ValueError, match="do not match 5 heads"):
        fit_heads(heads, (x, y[:, :4]), (x, y), steps=1, progress=False)
    kept, rec = fit_heads(heads, (x[:400], y[:400]), (x[400:], y[400:]), steps=40, lr=1e-2, every=20, keep=[4],
                          progress=False)
    assert rec["chosen_step"][4] == 0 and rec["val_plcc_after"][4] == rec["val_plcc_before"][4]
    assert all(torch.equal(p, q) for p, q in zip(kept[4].parameters(), heads[4].parameters()))
    assert not torch.equal(kept[0][0].weight, heads[0][0].weight)
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_heads(heads, (x, y), (x, y), steps=1, keep=range(5), progress=False)
    with pytest.raises(ValueError, match="head indices run from 0 to 4"):
        fit_heads(heads, (x, y), (x, y), steps=1, keep=[5], progress=False)


def test_refit_script_changes_scores_not_the_heatmap(model, demo_set, tmp_path, capsys):
    from evafusion_core.reward.refit import split_by_pair

    sys.path.insert(0, str(REPO / "training"))
    import refit_reward_heads as refit

    model.save_pretrained(tmp_path / "rm")
    cfg = {**_tiny_cfg(demo_set, tmp_path / "unused"), "split": {"test_fraction": 0.0, "seed": 0}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = ["--model", str(tmp_path / "rm"), "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out"),
            "--samples", "12", "--val-samples", "8", "--val-fraction", "0.5", "--steps", "40", "--lr", "1e-2",
            "--device", "cpu"]
    assert refit.main(args) == 0
    assert "validation pairs" in capsys.readouterr().out
    rec = json.loads((tmp_path / "out" / "refit.json").read_text())
    assert len(rec["val_plcc_after"]) == 5 and rec["settings"]["samples"] == 12
    from PIL import Image

    with Image.open(tmp_path / "out" / "plot.png") as im:  # the validation curves, drawn
        assert im.size[0] > 300 and len(np.unique(np.asarray(im.convert("L")))) > 2
    new = load_reward_model(tmp_path / "out" / "final")
    fused, ir, vis = torch.rand(1, 3, 40, 56), torch.rand(1, 1, 40, 56), torch.rand(1, 3, 40, 56)
    a, b = model.predict(fused, ir, vis), new.predict(fused, ir, vis)
    assert torch.equal(a["heatmap"], b["heatmap"])
    for k, step in enumerate(rec["chosen_step"]):  # a head kept at step 0 scores as before, a refit one differently
        assert torch.equal(a["scores"][:, k], b["scores"][:, k]) == (step == 0)
    assert refit.main(args) == 0 and "features from" in capsys.readouterr().out  # the rerun reuses the features
    tiny_model(seed=1).save_pretrained(tmp_path / "rm")  # other weights in the same folder: features recomputed
    assert refit.main(args) == 0 and "features from" not in capsys.readouterr().out
    model.save_pretrained(tmp_path / "rm0")
    rich = ["--model", str(tmp_path / "rm0"), *args[2:5], str(tmp_path / "rich"), *args[6:], "--head-pooling", "rich",
            "--keep", "Overall"]
    assert refit.main(rich) == 0
    wide = load_reward_model(tmp_path / "rich" / "final")
    c = model.predict(fused, ir, vis)
    d = wide.predict(fused, ir, vis)
    assert wide.head_pooling == "rich" and torch.equal(c["heatmap"], d["heatmap"])
    assert torch.allclose(c["scores"][:, 4], d["scores"][:, 4], atol=1e-5)  # Overall kept as trained
    assert json.loads((tmp_path / "rich" / "refit.json").read_text())["chosen_step"][4] == 0
    two = [*args[:5], str(tmp_path / "two"), *args[6:], "--sizes", str(model.image_size), "40"]
    assert refit.main(two) == 0  # samples shared between the model's size and a smaller one it upsamples
    assert "at 40 px, val PLCC before / after" in capsys.readouterr().out
    by_size = json.loads((tmp_path / "two" / "refit.json").read_text())["val_plcc_by_size"]
    assert set(by_size) == {str(model.image_size), "40"} and all(len(r["after"]) == 5 for r in by_size.values())
    assert (tmp_path / "two" / "sources_40.pt").is_file()
    assert len(torch.load(tmp_path / "two" / "features.pt", weights_only=True)["fit"][0]) == 12
    cues = [*args[:5], str(tmp_path / "cues"), *args[6:], "--cues", "retention", "quality", "blur", "ghosting",
            "--local-samples", "6"]
    assert refit.main(cues) == 0
    read = load_reward_model(tmp_path / "cues" / "final")
    groups = ("retention", "quality", "blur", "ghosting")
    assert read.cue_inputs == groups and not torch.all(read.cue_std == 1)  # fit samples' scale
    cached = torch.load(tmp_path / "cues" / "features.pt", weights_only=True)
    assert len(cached["fit"][0]) == 12 + 6 and cached["meta"]["local_samples"] == 6  # local samples fitted on too
    base = load_reward_model(tmp_path / "rm")  # the weights the command widened (seed 1, written above)
    assert torch.equal(read.predict(fused, ir, vis)["heatmap"], base.predict(fused, ir, vis)["heatmap"])
    first = json.loads((tmp_path / "cues" / "refit.json").read_text())["val_plcc_after"]
    assert refit.main(cues) == 0 and "features from" in capsys.readouterr().out  # cached unstandardised, reused
    assert json.loads((tmp_path / "cues" / "refit.json").read_text())["val_plcc_after"] == first
    with pytest.raises(ValueError, match="validation pairs"):
        split_by_pair(["only/one"], 0.5, 0)
    with pytest.raises(SystemExit, match="training config not found"):
        refit.main([*args[:2], "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o2")])


def test_eval_reward_cli_on_synthetic_and_hf(model, demo_set, tmp_path):
    pytest.importorskip("datasets")
    from evafusion_core.cli import main
    from evafusion_core.data.hf_format import export_hf

    model.save_pretrained(tmp_path / "rm")
    rc = main(["eval-reward", "--data", str(demo_set), "--model", str(tmp_path / "rm"), "--device", "cpu",
               "--split", "all", "--per-pair", "2", "--ladders-per-pair", "1", "--examples", "1",
               "--rank-check", "--out", str(tmp_path / "ev")])
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "reward_eval.json").read_text())
    assert res["n_samples"] == 8 and res["pairwise"]["n_ladders"] == 4 and "speed" in res
    assert res["data"]["labels"] == "targets"  # the benchmark's labels, those the bundled model learnt last
    assert res["rank_check"][demo_set.name]["n_pairs"] == 4 and "overall" not in res["rank_check"][demo_set.name]
    assert "errors_by_group" in res and "method average" in res["errors_by_group"]
    assert "## Rank check" in (tmp_path / "ev" / "reward_eval.md").read_text()
    assert res["heatmap_by_artifact"] and all(0 <= m["auc_judd"] <= 1 for m in res["heatmap_by_artifact"].values())
    assert "By artifact" in (tmp_path / "ev" / "reward_eval.md").read_text()
    lo, hi = res["scores"]["Overall"]["plcc_ci95"]  # four source pairs: an interval around the estimate
    assert lo <= res["scores"]["Overall"]["plcc"] <= hi
    from evafusion_core.data.synthetic import SourcePair, SyntheticRewardData

    u8 = lambda t: t.mul(255).round().to(torch.uint8)
    pair = SourcePair("d/p", u8(torch.rand(1, 24, 32)), u8(torch.rand(3, 24, 32)), {"avg": u8(torch.rand(1, 24, 32))})
    data = SyntheticRewardData([pair], seed=0)
    export_hf({"test": [data.sample(i) for i in range(3)]}, tmp_path / "hf")
    rc = main(["eval-reward", "--data", str(tmp_path / "hf"), "--model", str(tmp_path / "rm"), "--device", "cpu",
               "--examples", "0", "--out", str(tmp_path / "ev_hf")])
    assert rc == 0 and json.loads((tmp_path / "ev_hf" / "reward_eval.json").read_text())["n_samples"] == 3


def test_init_from_saved_weights_carries_everything(model, tmp_path):
    from evafusion_core.reward.train import init_from

    model.save_pretrained(tmp_path / "rm")
    fresh = tiny_model(seed=5)
    assert init_from(fresh, tmp_path / "rm") == []
    x = (torch.rand(1, 3, 40, 40), torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40))
    assert torch.allclose(fresh.eval().predict(*x)["scores"], model.predict(*x)["scores"], atol=1e-6)


def test_a_config_that_names_only_the_preset_fine_tunes_the_saved_architecture(model, tmp_path):
    """Fine-tuning a saved model (as reward_feedback.json does the bundled one) builds the saved
    architecture, so every tensor carries over; explicit model values still apply on top."""
    from evafusion_core.reward.refit import with_head_pooling
    from evafusion_core.reward.train import build_model, init_from

    saved = with_head_pooling(model, "rich")
    saved.save_pretrained(tmp_path / "rm")
    built = build_model({"init": str(tmp_path / "rm"), "model": {"preset": "small"}})
    assert built.image_size == 64 and built.head_pooling == "rich"
    assert init_from(built, tmp_path / "rm") == []
    x = (torch.rand(1, 3, 40, 40), torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40))
    assert torch.allclose(built.eval()(*x)["scores"], saved(*x)["scores"], atol=1e-6)
    assert build_model({"init": str(tmp_path / "rm"), "model": {"test_time_flip": True}}).test_time_flip
    with pytest.raises(ValueError, match="cannot read the saved model's config"):
        build_model({"init": str(tmp_path / "missing"), "model": {}})


def test_dimension_maps_grow_from_a_model_without_them(model, tmp_path):
    """A model saved without dimension maps starts a grown one off computing exactly its scores: the
    new head inputs start at zero, and only the new map output is left as initialised."""
    from evafusion_core.reward.train import init_from

    model.save_pretrained(tmp_path / "rm")
    torch.manual_seed(5)
    grown = create_reward_model("small", **TINY, dimension_maps=True)
    assert init_from(grown, tmp_path / "rm") == ["dim_out.weight", "dim_out.bias"]
    x = (torch.rand(2, 3, 40, 52), torch.rand(2, 1, 40, 52), torch.rand(2, 3, 40, 52))
    out = grown.eval().predict(*x)
    assert torch.allclose(out["scores"], model.predict(*x)["scores"], atol=1e-5)
    assert out["dimension_maps"].shape == (2, 4, 40, 52)
    assert 0 <= float(out["dimension_maps"].min()) and float(out["dimension_maps"].max()) <= 1
    assert "dimension_maps" not in model.predict(*x)
    grown.save_pretrained(tmp_path / "grown")
    back = load_reward_model(str(tmp_path / "grown"))
    assert back.dimension_maps and torch.allclose(back.predict(*x)["dimension_maps"], out["dimension_maps"])


def test_dimension_map_loss_trains_the_maps(demo_set, tmp_path):
    """The map loss reaches the new output: a few steps on one batch fit its maps better, and a
    training run logs the term and saves a model that has the maps."""
    from evafusion_core.data.synthetic import SyntheticConfig, SyntheticRewardData, collate, load_sources
    from evafusion_core.reward.train import reward_loss, train

    pairs = load_sources([demo_set], ("average", "max"), progress=False)
    batch = collate([SyntheticRewardData(pairs, seed=1, config=SyntheticConfig(clean_fraction=0.0)).sample(i)
                     for i in range(4)])
    torch.manual_seed(0)
    net = create_reward_model("small", **TINY, dimension_maps=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    weights = {"score": 1.0, "heatmap_mse": 1.0, "heatmap_bce": 0.5}
    history = []
    for _ in range(15):
        loss, parts = reward_loss(net(batch["fused"], batch["ir"], batch["vis"]), batch["scores"], batch["heatmap"],
                                  weights, batch["dimension_maps"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(parts["dimension_bce"])
    assert history[-1] < 0.95 * history[0], history  # BCE of soft targets has a floor well above 0

    cfg = _tiny_cfg(demo_set, tmp_path / "dm")
    cfg["model"]["dimension_maps"] = True
    train(cfg, device="cpu", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "dm" / "log.jsonl").read_text().splitlines()]
    assert all(r["dimension_mse"] >= 0 and r["dimension_bce"] > 0 for r in logged)
    assert load_reward_model(str(tmp_path / "dm" / "final")).dimension_maps


def test_pair_ranking_loss_is_least_at_the_labelled_differences():
    from evafusion_core.reward.train import pair_ranking_loss

    labels = torch.tensor([[5.0, 4.0, 3.0, 5.0, 4.5], [3.0, 4.0, 5.0, 4.0, 2.5]])
    exact = (labels / 5.0).requires_grad_()
    loss = pair_ranking_loss(exact, labels, [2.0, 1.0, 0.5, 1.0, 1.0])
    loss.backward()
    assert exact.grad.abs().max() < 1e-6  # the labelled differences are the minimum
    swapped = pair_ranking_loss(labels.flip(0) / 5.0, labels, [2.0, 1.0, 0.5, 1.0, 1.0])
    shifted = pair_ranking_loss(labels / 5.0 + 0.1, labels, [2.0, 1.0, 0.5, 1.0, 1.0])
    assert swapped > loss + 0.1 and torch.isclose(shifted, loss)  # only differences within a pair count


def test_heatmap_rank_loss_asks_every_marked_pixel_to_rank_above_the_unmarked(demo_set, tmp_path):
    from evafusion_core.reward.train import heatmap_rank_loss, train

    truth = torch.zeros(3, 1, 32, 32)
    truth[0, 0, 4:12, 4:12] = 1.0
    truth[1, 0, 20:30, 2:9] = 0.05  # faint damage counts as much as strong damage
    logits = torch.randn(3, 1, 16, 16, requires_grad=True)  # the truth is pooled to the decoder's resolution
    loss = heatmap_rank_loss(logits, truth)
    loss.backward()
    assert logits.grad[2].abs().max() == 0  # an image with nothing marked adds nothing
    pooled = torch.nn.functional.adaptive_avg_pool2d(truth, (16, 16))
    right = torch.where(pooled > 0, 1.0, -1.0) * 4
    assert heatmap_rank_loss(right, truth) < 0.05 < 4 < heatmap_rank_loss(-right, truth)
    assert heatmap_rank_loss(logits, torch.zeros_like(truth)) == 0

    cfg = _tiny_cfg(demo_set, tmp_path / "hr")
    cfg["loss"] = {**cfg["loss"], "heatmap_rank": 0.3}
    train(cfg, device="cpu", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "hr" / "log.jsonl").read_text().splitlines()]
    assert all(r["heatmap_rank"] >= 0 for r in logged) and any(r["heatmap_rank"] > 0 for r in logged)


def test_pair_ranking_trains_on_paired_samples_and_refuses_unpaired_ones(demo_set, tmp_path):
    from evafusion_core.reward.train import train

    cfg = _tiny_cfg(demo_set, tmp_path / "pr")
    cfg["loss"] = {**cfg["loss"], "pair_ranking": 1.0}
    with pytest.raises(ValueError, match="synthetic.paired"):
        train(cfg, device="cpu", progress=False)
    assert not (tmp_path / "pr").exists()  # refused before anything is written
    cfg["synthetic"] = {**cfg.get("synthetic", {}), "paired": True}
    train(cfg, device="cpu", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "pr" / "log.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and all(r["pair_ranking"] > 0 for r in logged)


def test_soup_script_averages_weights_and_refuses_mixed_configs_and_overwrites(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("soup_reward", REPO / "training" / "soup_reward.py")
    soup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soup)
    a, b = tiny_model(0), tiny_model(1)
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    assert soup.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")]) == 0
    got = load_reward_model(str(tmp_path / "ab")).state_dict()
    name = "heads.0.2.weight"
    assert torch.allclose(got[name], (a.state_dict()[name] + b.state_dict()[name]) / 2)
    assert not torch.allclose(got[name], a.state_dict()[name])

    create_reward_model("small", **{**TINY, "decoder_dim": 8}).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="other: config differs"):
        soup.soup([tmp_path / "a", tmp_path / "other"])
    with pytest.raises(SystemExit):  # a usage error naming the folder, not a traceback
        soup.main([str(tmp_path / "a"), str(tmp_path / "missing"), "--out", str(tmp_path / "am")])
    assert not (tmp_path / "am").exists()
    before = (tmp_path / "ab" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit):
        soup.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")])
    assert (tmp_path / "ab" / "model.safetensors").read_bytes() == before
