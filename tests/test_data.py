"""Reward-model data: the synthetic artifact generator and the human-feedback (HF datasets) format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evafusion_core.data.synthetic import (
    ARTIFACT_WEIGHTS,
    ARTIFACTS,
    DIMENSIONS,
    ArtifactSpec,
    Effect,
    SourcePair,
    SyntheticConfig,
    SyntheticRewardData,
    apply_artifacts,
    collate,
    is_test_pair,
    ladder,
    load_sources,
    make_sample,
    scores_for,
    split_pairs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _u8(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(0, 1).mul(255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def sources() -> list[SourcePair]:
    """Three small procedural pairs with two clean fused images each (no files, no fusion models)."""
    from evafusion_core.demo import make_demo_pair

    out = []
    for seed in range(3):
        ir, vis = make_demo_pair(48, 64, seed=seed)
        avg = (ir + vis.mean(0, keepdim=True)) / 2
        mx = torch.maximum(ir, vis.mean(0, keepdim=True))
        out.append(SourcePair(f"demo/p{seed}", _u8(ir), _u8(vis), {"average": _u8(avg), "max": _u8(mx)}))
    return out


def test_generator_is_deterministic(sources):
    a = SyntheticRewardData(sources, seed=3, config=SyntheticConfig(flip=True))
    b = SyntheticRewardData(sources, seed=3, config=SyntheticConfig(flip=True))
    for i in (0, 5, 17):
        sa, sb = a.sample(i), b.sample(i)
        for k in ("fused", "ir", "vis", "heatmap", "scores"):
            assert torch.equal(sa[k], sb[k]), k
        assert sa["artifacts"] == sb["artifacts"]
    c = SyntheticRewardData(sources, seed=4)
    assert any(not torch.equal(a.sample(i)["fused"], c.sample(i)["fused"]) or a.sample(i)["key"] != c.sample(i)["key"]
               for i in range(5))


def test_sample_shapes_ranges_and_clean_fraction(sources):
    data = SyntheticRewardData(sources, seed=0)
    clean = sum(not data.specs(i)[2] for i in range(2000)) / 2000
    assert 0.10 <= clean <= 0.20
    for i in range(12):
        s = data.sample(i)
        assert s["fused"].shape[0] in (1, 3) and s["fused"].shape[-2:] == (48, 64)
        assert s["heatmap"].shape == (1, 48, 64)
        assert 0 <= float(s["fused"].min()) and float(s["fused"].max()) <= 1
        assert 0 <= float(s["heatmap"].min()) and float(s["heatmap"].max()) <= 1
        assert s["scores"].shape == (5,) and bool(((s["scores"] >= 1) & (s["scores"] <= 5)).all())
        if not s["artifacts"]:
            assert torch.all(s["scores"] == 5) and float(s["heatmap"].max()) == 0
    batch = collate([data.sample(i) for i in range(4)])
    assert batch["fused"].shape == (4, 3, 48, 64) and batch["ir"].shape == (4, 1, 48, 64)
    assert batch["scores"].shape == (4, 5)


@pytest.mark.parametrize("name", ARTIFACTS)
def test_every_artifact_odd_sizes_grey_and_colour(name):
    from evafusion_core.demo import make_demo_pair

    ir, vis = make_demo_pair(37, 53, seed=2)
    for fused in (vis, vis.mean(0, keepdim=True)):
        out, heat, effects = apply_artifacts(fused, ir, vis, [ArtifactSpec(name, 0.8, 11)])
        assert out.shape[-2:] == (37, 53) and out.shape[0] in (1, 3)
        assert heat.shape == (1, 37, 53)
        assert 0 <= float(out.min()) and float(out.max()) <= 1
        assert len(effects) == 1 and 0 <= effects[0].coverage <= 1 and 0 <= effects[0].visibility <= 1


@pytest.mark.parametrize("name", ARTIFACTS)
def test_labels_are_monotone_in_strength(sources, name):
    lad = ladder(sources[0], "average", name, seed=5, strengths=(0.2, 0.4, 0.6, 0.8, 1.0))
    scores = torch.stack([s["scores"] for s in lad])  # clean first, then rising strength
    assert torch.all(scores[1:] <= scores[:-1] + 1e-6), scores  # no dimension ever improves
    affected = [k for k, w in enumerate(ARTIFACT_WEIGHTS[name]) if w > 0] + [4]
    if lad[-1]["artifacts"][0][3] > 0:  # visible on this content: strictly worse on what it affects
        for k in affected:
            assert torch.all(scores[1:, k] < scores[:-1, k]), (DIMENSIONS[k], scores[:, k])
    peaks = [float(s["heatmap"].max()) for s in lad]
    assert peaks == sorted(peaks) and peaks[0] == 0


def test_scores_for_mapping():
    assert torch.equal(scores_for([]), torch.full((5,), 5.0))
    weak = scores_for([Effect("noise", 0.2, 0.5)])
    strong = scores_for([Effect("noise", 0.9, 0.5)])
    assert torch.all(strong <= weak) and strong[4] < weak[4]
    # Noise hurts Artifacts most; thermal loss hurts Thermal Retention most.
    assert int(torch.argmin(strong[:4])) == DIMENSIONS.index("Artifacts")
    thermal = scores_for([Effect("thermal_loss", 1.0, 1.0)])
    assert int(torch.argmin(thermal[:4])) == DIMENSIONS.index("Thermal Retention") and float(thermal[0]) == 1.0
    # A second artifact never raises a score; a bigger region never lowers the penalty.
    both = scores_for([Effect("noise", 0.9, 0.5), Effect("blur", 0.5, 0.5)])
    assert torch.all(both <= strong)
    assert torch.all(scores_for([Effect("blur", 0.5, 0.9)]) <= scores_for([Effect("blur", 0.5, 0.05)]))


@pytest.mark.parametrize("name", ["thermal_loss", "texture_loss", "noise"])
def test_dimension_maps_follow_the_artifact_weights(sources, name):
    """Each map is weight x mask x strength x visibility: thermal loss costs Thermal where it is and
    nothing elsewhere, texture loss never costs Thermal (weight 0), and a clean image costs nothing."""
    clean = make_sample(sources[0], "average", [])
    assert clean["dimension_maps"].shape == (4, *clean["heatmap"].shape[-2:])
    assert float(clean["dimension_maps"].max()) == 0
    s = make_sample(sources[0], "average", [ArtifactSpec(name, 0.8, 4)])
    peak = float(s["heatmap"].max())  # one artifact: mask x strength x visibility at its strongest
    assert peak > 0
    for k, w in enumerate(ARTIFACT_WEIGHTS[name]):
        assert float(s["dimension_maps"][k].max()) == pytest.approx(w * peak, abs=1e-5), DIMENSIONS[k]
    # Outside the artifact (zero heatmap) no dimension loses anything.
    outside = s["heatmap"][0] == 0
    assert outside.any() and float(s["dimension_maps"][:, outside].abs().max()) == 0


def test_dimension_maps_flip_with_the_images_and_reach_the_batch(sources):
    data = SyntheticRewardData(sources, seed=3, config=SyntheticConfig(flip=True, clean_fraction=0.0))
    flipped = [data.sample(i) for i in range(20) if data.specs(i)[4]]
    assert flipped, "no flipped sample in 20 draws"
    s = flipped[0]
    assert torch.equal((s["dimension_maps"].amax(0, keepdim=True) > 0), (s["heatmap"] > 0))
    batch = collate([data.sample(0), data.sample(1)])
    assert batch["dimension_maps"].shape == (2, 4, *batch["heatmap"].shape[-2:])
    no_maps = {k: v for k, v in data.sample(2).items() if k != "dimension_maps"}
    assert "dimension_maps" not in collate([data.sample(0), no_maps])  # a human rating has none


def test_invisible_artifact_is_not_labelled_severe(sources):
    p = sources[0]
    # Thermal loss where the fused image already equals the visible image changes nothing.
    same = SourcePair("x/y", p.ir, p.vis, {"vis": p.vis})
    s = make_sample(same, "vis", [ArtifactSpec("thermal_loss", 1.0, 3)], colour=True)
    assert float(s["scores"][0]) > 4.9 and float(s["heatmap"].max()) < 0.05


def test_whole_image_artifacts_are_a_source_alone(sources):
    """Visible alone and IR alone are thermal / texture loss everywhere, labelled below the fusion."""
    p = sources[0]
    vis_alone = make_sample(p, "average", [ArtifactSpec("thermal_loss", 1.0, 3, whole=True)], colour=True)
    assert torch.allclose(vis_alone["fused"], p.get("vis"), atol=1e-6)
    ir_alone = make_sample(p, "average", [ArtifactSpec("texture_loss", 1.0, 3, whole=True)], colour=False)
    assert torch.allclose(ir_alone["fused"], p.get("ir"), atol=1e-6)
    clean = make_sample(p, "average", [], colour=True)
    t, tx, o = DIMENSIONS.index("Thermal Retention"), DIMENSIONS.index("Texture Preservation"), -1
    assert vis_alone["scores"][t] < 3 and ir_alone["scores"][tx] < 3
    assert vis_alone["scores"][o] < clean["scores"][o] and ir_alone["scores"][o] < clean["scores"][o]
    assert float(vis_alone["heatmap"].min()) > 0  # the whole image is marked, scaled by visibility
    with pytest.raises(ValueError, match="halo"):
        make_sample(p, "average", [ArtifactSpec("halo", 1.0, 3, whole=True)])


def test_whole_fraction_draws_whole_image_samples_and_leaves_old_streams_alone(sources):
    plain = SyntheticRewardData(sources, seed=2)
    assert all(not s.whole for i in range(300) for s in plain.specs(i)[2])
    data = SyntheticRewardData(sources, seed=2, config=SyntheticConfig(whole_fraction=0.3))
    specs = [data.specs(i)[2] for i in range(1000)]
    whole = [s[0] for s in specs if s and s[0].whole]
    assert 0.25 < len(whole) / 1000 < 0.35
    assert {s.name for s in whole} == {"thermal_loss", "texture_loss", "blur"}
    assert all(len(s) == 1 and 0.5 <= s[0].strength <= 1.0 for s in specs if s and s[0].whole)
    assert SyntheticConfig.from_dict({"whole_strength": [0.6, 0.9]}).whole_strength == (0.6, 0.9)


def test_paired_samples_share_their_source_and_leave_old_streams_alone(sources):
    plain = SyntheticRewardData(sources, seed=3)
    paired = SyntheticRewardData(sources, seed=3, config=SyntheticConfig(paired=True))
    assert [plain.specs(i) for i in range(0, 40, 2)] == [paired.specs(i) for i in range(0, 40, 2)]
    same = lambda a, b: (a[0].key, a[1], a[3], a[4]) == (b[0].key, b[1], b[3], b[4])  # noqa: E731
    specs = [paired.specs(i) for i in range(200)]
    assert all(same(specs[k], specs[k + 1]) for k in range(0, 200, 2))
    assert sum(same(specs[k], specs[k + 1]) for k in range(1, 199, 2)) < 40  # pairs are independent of each other
    assert sum(specs[k][2] != specs[k + 1][2] for k in range(0, 200, 2)) > 80  # each draws its own artifacts


def test_split_by_source_pair_has_no_overlap():
    keys = [f"set{k % 3}/img{k:04d}" for k in range(600)]
    pairs = [SourcePair(k, torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), {"average": torch.zeros(1, 1, 1)}) for k in keys]
    train, test = split_pairs(pairs, 0.15, seed=0)
    assert not {p.key for p in train} & {p.key for p in test}
    assert len(train) + len(test) == len(pairs)
    assert 0.10 < len(test) / len(pairs) < 0.20
    # Stable: a pair's side does not depend on the other pairs, only on (seed, key).
    assert [is_test_pair(p.key) for p in pairs[:50]] == [p in test for p in pairs[:50]]
    assert [is_test_pair(k, 0.15, 1) for k in keys] != [is_test_pair(k, 0.15, 0) for k in keys]
    # Samples drawn from the training split never come from a held-out pair.
    data = SyntheticRewardData(train, seed=0)
    assert all(data.specs(i)[0].key not in {p.key for p in test} for i in range(300))


def test_load_sources_from_benchmark_folder(ivif, tmp_path):
    pairs = load_sources([ivif / "fmb5"], ("average", "SeAFusion", "IFCNN"), size=64, progress=False,
                         cache=tmp_path / "cache.pt")
    assert len(pairs) == 5 and pairs[0].key.startswith("fmb5/")
    assert set(pairs[0].fused) == {"average", "SeAFusion", "IFCNN"}
    assert pairs[0].get("SeAFusion").shape == (1, 64, 64) and pairs[0].get("vis").shape == (3, 64, 64)
    again = load_sources([ivif / "fmb5"], ("average", "SeAFusion", "IFCNN"), size=64, progress=False,
                         cache=tmp_path / "cache.pt")
    assert all(torch.equal(a.fused["IFCNN"], b.fused["IFCNN"]) for a, b in zip(pairs, again))


def test_training_split_of_the_training_sets(ivif):
    from evafusion_core.io import find_pairs

    sets = ("roadscene171", "msrs34")
    keys = [f"{s}/{stem}" for s in sets for stem, _ in find_pairs(ivif / s / "ir", ivif / s / "vi")]
    test = [k for k in keys if is_test_pair(k)]
    assert 0.08 < len(test) / len(keys) < 0.25 and any(k.startswith("msrs34/") for k in test)


def test_hf_format_round_trip(sources, tmp_path):
    datasets = pytest.importorskip("datasets")
    from evafusion_core.data.hf_format import SCORE_KEYS, HFRewardDataset, export_hf, is_hf_folder

    data = SyntheticRewardData(sources, seed=1, config=SyntheticConfig(clean_fraction=0.0))
    recs = [data.sample(i) for i in range(5)]
    out = export_hf({"train": recs[:3], "dev": recs[3:4], "test": recs[4:]}, tmp_path / "hf")
    assert is_hf_folder(out)

    # The exact original format, read with datasets itself.
    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"train", "dev", "test"} and len(dd["train"]) == 3
    row = dd["train"][0]
    assert set(row) == {"fused", "infrared", "visible", "artifact_heatmap", "scores"}
    assert set(row["scores"]) == set(SCORE_KEYS) and "Overall Score" in row["scores"]
    assert row["artifact_heatmap"].mode == "L" and row["infrared"].mode == "L"

    ds = HFRewardDataset(out, "train")
    assert len(ds) == 3
    for k in range(3):
        got, want = ds[k], recs[k]
        assert torch.allclose(got["scores"], want["scores"], atol=1e-5)
        assert got["fused"].shape[-2:] == want["fused"].shape[-2:]
        assert torch.allclose(got["fused"], want["fused"].expand_as(got["fused"]), atol=1 / 255 + 1e-6)
        assert torch.allclose(got["heatmap"], want["heatmap"], atol=1 / 255 + 1e-6)
        assert got["ir"].shape[0] == 1
    with pytest.raises(Exception, match="split"):
        HFRewardDataset(out, "validation")


def test_hf_export_accepts_original_naming(tmp_path):
    pytest.importorskip("datasets")
    from evafusion_core.data.hf_format import HFRewardDataset, export_hf
    from evafusion_core.errors import EvaFusionError

    img = np.full((8, 10, 3), 128, np.uint8)
    rec = {"fused": img, "infrared": img[..., 0], "visible": img, "artifact_heatmap": np.zeros((8, 10), np.uint8),
           "scores": {"Thermal Retention": 4, "Texture Preservation": 3.5, "Artifacts": 3, "Sharpness": 2,
                      "Overall Score": 3.25}}
    ds = HFRewardDataset(export_hf({"test": [rec]}, tmp_path / "hf"), "test")
    assert ds[0]["scores"].tolist() == [4.0, 3.5, 3.0, 2.0, 3.25]
    with pytest.raises(EvaFusionError, match="1..5"):
        export_hf({"test": [{**rec, "scores": [0, 1, 2, 3, 4]}]}, tmp_path / "bad")


def _hot_and_textured_pair(size: tuple[int, int] = (64, 64), box: tuple[int, int, int, int] = (20, 36, 20, 36),
                            ir_level: float = 0.2, vis_mean: float = 0.45, vis_texture: float = 0.15,
                            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """IR: a uniform scene with one hot box (rows, then columns). Visible: grey with fine texture that the IR lacks."""
    g = torch.Generator().manual_seed(seed)
    ir = torch.full((1, *size), ir_level)
    ir[:, box[0]:box[1], box[2]:box[3]] = 0.9
    vis = (vis_mean + vis_texture * torch.randn(1, *size, generator=g)).clamp(0, 1)
    return ir, vis


def test_retention_deficits_charge_what_a_fusion_leaves_out():
    """Max keeps the hot target, the visible image keeps all detail, the average half of each,
    the visible image alone none of the target and the IR image alone none of the detail."""
    from evafusion_core.data.synthetic import retention_deficits

    ir, vis = _hot_and_textured_pair()
    thermal = {name: retention_deficits(f, ir, vis)[0]
               for name, f in {"max": torch.maximum(ir, vis), "average": (ir + vis) / 2, "vis": vis}.items()}
    assert thermal["max"] == pytest.approx(0.0, abs=0.02)
    assert thermal["vis"] > 0.5 and thermal["average"] == pytest.approx(thermal["vis"] / 2, rel=0.1)
    texture = {name: retention_deficits(f, ir, vis)[1] for name, f in {"vis": vis, "average": (ir + vis) / 2,
                                                                         "ir": ir}.items()}
    assert texture["vis"] == pytest.approx(0.0, abs=0.02)
    assert texture["ir"] > 0.5 and texture["average"] == pytest.approx(texture["ir"] / 2, rel=0.1)


def test_retention_labels_score_clean_fusions_by_what_they_keep(sources):
    """Relative labels give every clean fusion 5; retention labels rank max above the average on
    Thermal, leave Artifacts and Sharpness at 5, and stay monotone in every artifact's strength."""
    p = sources[0]
    t, o = DIMENSIONS.index("Thermal Retention"), DIMENSIONS.index("Overall")
    assert torch.equal(make_sample(p, "average", [])["scores"], torch.full((5,), 5.0))
    avg = make_sample(p, "average", [], labels="retention")["scores"]
    mx = make_sample(p, "max", [], labels="retention")["scores"]
    assert avg[t] < mx[t] <= 5 and avg[o] < 5
    assert torch.equal(avg[2:4], torch.full((2,), 5.0))
    for name in ("thermal_loss", "texture_loss", "blur"):
        lad = ladder(p, "max", name, seed=5, labels="retention")
        scores = torch.stack([s["scores"] for s in lad])
        assert torch.all(scores[1:] <= scores[:-1] + 1e-6), (name, scores)
    with pytest.raises(ValueError, match="labels"):
        make_sample(p, "max", [], labels="absolute")


def test_retention_deficits_are_computed_once_per_clean_fusion(sources, monkeypatch):
    import evafusion_core.data.synthetic as synthetic

    p = SourcePair(sources[1].key, sources[1].ir, sources[1].vis, dict(sources[1].fused))
    calls = []
    real = synthetic.retention_deficits
    monkeypatch.setattr(synthetic, "retention_deficits", lambda *a: calls.append(1) or real(*a))
    first = make_sample(p, "average", [], colour=True, labels="retention")["scores"]
    again = make_sample(p, "average", [ArtifactSpec("noise", 0.5, 3)], colour=True, labels="retention")["scores"]
    make_sample(p, "average", [], colour=False, labels="retention")
    assert len(calls) == 2 and set(p.deficits) == {("average", True, "retention"), ("average", False, "retention")}
    assert torch.allclose(first[:2], 5.0 - 4.0 * torch.tensor(p.deficits["average", True, "retention"]), atol=0.05)
    assert torch.all(again <= first)


def _night_scene_with_one_small_person() -> tuple[torch.Tensor, torch.Tensor]:
    """A dark IR frame with one warm 5x5 target (0.24% of it) and a bright textured visible image."""
    return _hot_and_textured_pair((96, 108), (40, 45, 50, 55), ir_level=0.05, vis_mean=0.5, vis_texture=0.1, seed=3)


def test_targets_labels_charge_the_loss_of_a_small_warm_target():
    """"retention" counts hot targets only from 0.5% of the frame, so losing one small person costs
    nothing; "targets" counts from 0.05%: the visible image alone loses Thermal points, the max keeps them."""
    from evafusion_core.data.synthetic import MIN_TARGET_AREA, retention_deficits

    ir, vis = _night_scene_with_one_small_person()
    assert retention_deficits(vis, ir, vis, MIN_TARGET_AREA["retention"])[0] == 0.0
    assert retention_deficits(vis, ir, vis, MIN_TARGET_AREA["targets"])[0] > 0.4
    assert retention_deficits(torch.maximum(ir, vis), ir, vis, MIN_TARGET_AREA["targets"])[0] < 0.05


def test_targets_labels_mark_a_thermal_loss_only_where_it_changes_the_image():
    """A whole-image thermal loss at full strength turns the fusion into the visible image. Under
    "targets" labels its heatmap marks the lost target, not the unchanged frame around it, and its
    Thermal label is as harsh as the retention charge for the visible image alone (within 0.15)."""
    from evafusion_core.data.synthetic import MIN_TARGET_AREA, apply_artifacts, retention_deficits

    ir, vis = _night_scene_with_one_small_person()
    fused = torch.maximum(ir, vis)
    spec = [ArtifactSpec("thermal_loss", 1.0, 0, whole=True)]
    out, heat, eff = apply_artifacts(fused, ir, vis, spec, focus_targets=True)
    assert torch.allclose(out, vis)
    assert float(heat[:, 40:45, 50:55].mean()) > 0.3 and float(heat[:, :30].max()) == 0.0
    thermal = 5.0 - float(scores_for(eff)[0])
    alone = 4.0 * retention_deficits(vis, ir, vis, MIN_TARGET_AREA["targets"])[0]
    assert thermal == pytest.approx(alone, abs=0.6)  # 0.15 of the 0..1 deficit, on the 1..5 scale
    _, plain_heat, plain = apply_artifacts(fused, ir, vis, spec)
    assert float(plain_heat[:, :30].min()) > 0 and 5.0 - float(scores_for(plain)[0]) < thermal


def test_targets_labels_stay_monotone_in_strength(sources):
    p = sources[0]
    for name in ("thermal_loss", "texture_loss", "halo"):
        scores = torch.stack([s["scores"] for s in ladder(p, "average", name, seed=7, labels="targets")])
        assert torch.all(scores[1:] <= scores[:-1] + 1e-6), (name, scores)
