"""The feedback folder: safe writes (crashes, concurrency, corrupt lines), stats, export, training on it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evafusion_core.feedback import (
    FeedbackError,
    FeedbackStore,
    FeedbackTrainingData,
    export_feedback_hf,
    feedback_stats,
    format_stats,
    item_hash,
    split_of,
)

REPO = Path(__file__).resolve().parents[1]


def triple(seed: int, h: int = 24, w: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g), torch.rand(1, h, w, generator=g), torch.rand(3, h, w, generator=g)


def test_rating_round_trip_and_content_addressed_images(tmp_path):
    store = FeedbackStore(tmp_path / "fb")
    f, ir, vis = triple(0)
    mask = torch.zeros(24, 32)
    mask[4:10, 5:15] = 1
    rec = store.add_rating(f, ir, vis, [5, 4, 3, 2, 4], annotator="ana", mask=mask[None], model="light", pair="p0")
    assert rec["version"] == 1 and rec["item"] == item_hash(f, ir, vis)
    f2 = f.flip(-1)
    store.add_rating(f2, ir, vis, [3, 3, 3, 3, 3], annotator="ana")  # another fusion of the same sources
    (back,) = [r for r in store.ratings() if r["item"] == rec["item"]]
    assert back["scores"] == {"Thermal Retention": 5.0, "Texture Preservation": 4.0, "Artifacts": 3.0,
                              "Sharpness": 2.0, "Overall": 4.0}
    assert torch.allclose(store.image(back["images"]["fused"]), f, atol=1 / 255)
    assert torch.equal(store.image(back["mask"], grey=True)[0] > 0.5, mask > 0.5)
    # IR and visible are stored once although two ratings use them.
    assert len(list((tmp_path / "fb" / "images").glob("*.png"))) == 5
    assert not list((tmp_path / "fb" / "images").glob(".*.tmp"))


def test_rerating_is_a_new_version_and_unchanged_is_not_written(tmp_path):
    store = FeedbackStore(tmp_path)
    f, ir, vis = triple(1)
    store.add_rating(f, ir, vis, [3] * 5, annotator="ana")
    assert store.add_rating(f, ir, vis, [3] * 5, annotator="ana", only_if_changed=True) is None
    second = store.add_rating(f, ir, vis, [4, 3, 3, 3, 4], annotator="ana", only_if_changed=True)
    assert second["version"] == 2
    other = store.add_rating(f, ir, vis, [2] * 5, annotator="bob")
    assert other["version"] == 1  # versions count per annotator
    assert [r["version"] for r in store.ratings(latest=False)] == [1, 2, 1]
    latest = store.ratings()
    assert [(r["annotator"], r["scores"]["Overall"]) for r in latest] == [("ana", 4.0), ("bob", 2.0)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": [3, 3, 3, 3, 6]}, "Overall is 6.0, outside 1..5"),
        ({"scores": [3, 3, 3]}, "need 5 values"),
        ({"annotator": " "}, "annotator is empty"),
        ({"mask": torch.ones(10, 10)}, "artifact mask is 10x10 but the fused image is 32x24"),
        ({"mask": torch.ones(24 * 32)}, "artifact mask: expected [H,W]"),
        ({"vis": torch.rand(3, 20, 32)}, "images differ in size"),
        ({"fused": torch.full((3, 24, 32), float("nan"))}, "fused: contains NaN"),
        ({"fused": torch.rand(2, 3, 24, 32)}, "fused: expected one image"),
    ],
)
def test_bad_input_is_refused_by_name_and_nothing_is_written(tmp_path, kwargs, message):
    f, ir, vis = triple(2)
    args = {"fused": f, "ir": ir, "vis": vis, "scores": [3] * 5, "annotator": "ana", **kwargs}
    store = FeedbackStore(tmp_path)
    with pytest.raises(FeedbackError, match=re.escape(message)):
        store.add_rating(args.pop("fused"), args.pop("ir"), args.pop("vis"), args.pop("scores"), **args)
    assert not store.records_path.exists()


def test_preferences(tmp_path):
    store = FeedbackStore(tmp_path)
    f, ir, vis = triple(3)
    rec = store.add_preference(f, f.flip(-1), ir, vis, "B", annotator="ana", reason=" sharper ", model_a="light",
                               model_b="average")
    assert rec["choice"] == "B" and rec["reason"] == "sharper" and rec["models"]["b"] == "average"
    assert store.add_preference(f, f.flip(-1), ir, vis, "B", annotator="ana", reason="sharper",
                                only_if_changed=True) is None
    with pytest.raises(FeedbackError, match="choice 'C'"):
        store.add_preference(f, f, ir, vis, "C", annotator="ana")
    assert len(store.preferences()) == 1


def test_corrupt_line_is_reported_with_its_number_and_skipped_only_on_request(tmp_path):
    store = FeedbackStore(tmp_path)
    for k in range(3):
        store.add_rating(*triple(k), [3] * 5, annotator="ana")
    good = store.records_path.read_text()
    lines = good.splitlines()
    lines[1] = lines[1][:40] + "#garbage"
    store.records_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedbackError, match=r"feedback.jsonl line 2: .*skip_bad"):
        store.read()
    res = store.read(skip_bad=True)
    assert [r["line"] for r in res.records] == [1, 3] and len(res.skipped) == 1 and "line 2" in res.skipped[0]
    # A record whose image has gone is named too.
    store.records_path.write_text(good)
    (tmp_path / store.ratings()[-1]["images"]["fused"]).unlink()
    with pytest.raises(FeedbackError, match=r"line 3: files missing: images/\w+\.png"):
        store.ratings()


def test_cli_stats_export_rate_and_bad_line(tmp_path, capsys):
    from evafusion_core.cli import main
    from evafusion_core.io import save_image

    f, ir, vis = triple(4)
    for name, im in (("f", f), ("ir", ir), ("vis", vis)):
        save_image(im, tmp_path / f"{name}.png")
    fb = tmp_path / "fb"
    base = ["--fused", str(tmp_path / "f.png"), "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png")]
    assert main(["feedback", "rate", str(fb), *base, "--scores", "4,4,5,3,4", "--annotator", "cli"]) == 0
    assert main(["feedback", "rate", str(fb), *base, "--scores", "2,4,5,3,4", "--annotator", "ana"]) == 0
    assert main(["feedback", "rate", str(fb), *base, "--scores", "4,4,9,3,4", "--annotator", "ana"]) == 2
    assert "Artifacts is 9.0, outside 1..5" in capsys.readouterr().err
    assert main(["feedback", "stats", str(fb), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "2 ratings of 1 images" in out and "agreement on 1 images" in out
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["agreement"]["dimensions"]["Thermal Retention"]["mean_abs_diff"] == 2.0
    assert main(["feedback", "export", str(fb), "--format", "hf", str(tmp_path / "hf"), "--test-fraction", "0",
                 "--dev-fraction", "0"]) == 0
    assert "train 1 rows" in capsys.readouterr().out
    assert main(["feedback", "export", str(fb), str(tmp_path / "hf")]) == 2  # never overwrites
    with open(fb / "feedback.jsonl", "a") as fh:
        fh.write("not json\n")
    assert main(["feedback", "stats", str(fb)]) == 2
    assert "line 3" in capsys.readouterr().err
    assert main(["feedback", "stats", str(fb), "--skip-bad"]) == 0
    assert "skipped 1 bad line" in capsys.readouterr().out


def test_interrupted_last_line_is_ignored_then_moved_aside(tmp_path):
    store = FeedbackStore(tmp_path)
    store.add_rating(*triple(5), [3] * 5, annotator="ana")
    with open(store.records_path, "ab") as fh:  # what a crash in the middle of a write leaves
        fh.write(b'{"kind": "rating", "id": "abc", "annot')
    res = store.read()
    assert len(res.records) == 1 and res.interrupted_tail
    store.add_rating(*triple(6), [4] * 5, annotator="ana")
    assert len(store.read().records) == 2 and not store.read().interrupted_tail
    assert (tmp_path / "feedback.jsonl.interrupted").read_bytes().startswith(b'{"kind": "rating", "id": "abc"')


WRITER = r"""
import sys, torch
from evafusion_core.feedback import FeedbackStore
store, who, n = FeedbackStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
g = torch.Generator().manual_seed(0)
f, ir, vis = torch.rand(3, 48, 64, generator=g), torch.rand(1, 48, 64, generator=g), torch.rand(3, 48, 64, generator=g)
print("ready", flush=True)
for k in range(n):
    other = torch.rand(3, 48, 64)  # a new image every time: images are written as well as lines
    store.add_rating(f, ir, vis, [1 + k % 5] * 5, annotator="shared")
    store.add_rating(other, ir, vis, [3] * 5, annotator=who)
"""


def _writer(folder: Path, who: str, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(folder), who, str(n)], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_concurrent_writers_lose_nothing(tmp_path):
    procs = [_writer(tmp_path, f"w{k}", 8) for k in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    store = FeedbackStore(tmp_path)
    records = store.read().records
    assert len(records) == 3 * 8 * 2
    shared = [r["version"] for r in records if r["annotator"] == "shared"]
    assert sorted(shared) == list(range(1, 25))  # one version each: no two writers took the same
    for k in range(3):
        assert sum(r["annotator"] == f"w{k}" for r in records) == 8


def test_writer_killed_mid_record_leaves_a_valid_dataset(tmp_path):
    for delay in (0.05, 0.2, 0.45):
        p = _writer(tmp_path, "killed", 10_000)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    store = FeedbackStore(tmp_path)
    res = store.read()  # raises on any bad line or missing file
    assert res.records and all((tmp_path / rel).is_file() for r in res.records for rel in r["images"].values())
    before = len(res.records)
    store.add_rating(*triple(7), [5] * 5, annotator="after")
    assert len(store.read().records) == before + 1 and not store.read().interrupted_tail


def _two_annotators(tmp_path: Path) -> FeedbackStore:
    store = FeedbackStore(tmp_path / "fb")
    for k, (a, b) in enumerate([(5, 4), (3, 3), (2, 4)]):
        f, ir, vis = triple(10 + k)
        store.add_rating(f, ir, vis, [a] * 5, annotator="ana")
        store.add_rating(f, ir, vis, [b] * 5, annotator="bob",
                         mask=torch.ones(24, 32) if k == 0 else None)
        store.add_preference(f, f.flip(-1), ir, vis, "A", annotator="ana")
        store.add_preference(f.flip(-1), f, ir, vis, "B" if k < 2 else "A", annotator="bob")
    return store


def test_stats_counts_and_agreement(tmp_path):
    s = feedback_stats(_two_annotators(tmp_path))
    assert s["ratings"] == {"latest": 6, "all_versions": 6, "images": 3}
    assert s["annotators"]["ana"]["ratings"] == 3 and s["annotators"]["bob"]["preferences"] == 3
    assert s["annotators"]["ana"]["mean"]["Overall"] == pytest.approx(10 / 3)
    ov = s["agreement"]["dimensions"]["Overall"]
    assert ov["annotator_pairs"] == 3 and ov["exact"] == pytest.approx(1 / 3)
    assert ov["within_one"] == pytest.approx(2 / 3) and ov["mean_abs_diff"] == pytest.approx(1.0)
    assert ov["pearson"] == pytest.approx(np.corrcoef([5, 3, 2], [4, 3, 4])[0, 1])
    # bob saw the pairs the other way round: B then means what A meant to ana, so 2 of 3 pairs agree.
    assert s["preferences"]["pairs_with_several_annotators"] == 3
    assert s["preferences"]["agreement"] == pytest.approx(2 / 3)
    assert "Overall" in format_stats(s)


def test_export_pools_annotators_in_the_original_format(tmp_path):
    from evafusion_core.data.hf_format import HFRewardDataset

    store = _two_annotators(tmp_path)
    counts = export_feedback_hf(store, tmp_path / "hf", dev_fraction=0, test_fraction=0)
    assert counts == {"train": 3}
    rows = HFRewardDataset(tmp_path / "hf", "train")
    overall = sorted(float(rows[i]["scores"][-1]) for i in range(3))
    assert overall == [3.0, 3.0, 4.5]
    heat = [float(rows[i]["heatmap"].mean()) for i in range(3)]
    assert sorted(round(h, 2) for h in heat) == [0.0, 0.0, 0.5]  # one of two annotators drew a full mask
    # The split is by source pair and does not depend on the other pairs.
    assert split_of("abc", 0.1, 0.1) == split_of("abc", 0.1, 0.1)
    fr = [split_of(f"s{k}", 0.2, 0.3) for k in range(2000)]
    assert abs(fr.count("test") / 2000 - 0.3) < 0.05 and abs(fr.count("dev") / 2000 - 0.2) < 0.05


def test_reward_training_mixes_feedback_with_a_ranking_loss(tmp_path):
    from evafusion_core.reward.train import train
    from tests.test_reward import TINY

    store = _two_annotators(tmp_path)
    data = FeedbackTrainingData(store.root, 64)
    assert len(data.samples) == 3 and len(data.pairs) == 6 and data.samples[0]["fused"].shape == (3, 64, 64)
    cfg = json.loads((REPO / "training" / "configs" / "reward_small.json").read_text())
    cfg.update({"sources": [{"kind": "feedback", "path": str(store.root), "weight": 1.0}],
                "model": {"preset": "small", **TINY}, "steps": 3, "batch_size": 2, "warmup": 1,
                "checkpoint_every": 3, "val_every": 0, "val_samples": 0, "threads": 1, "preference_batch": 2,
                "out": str(tmp_path / "run")})
    torch.set_num_threads(1)
    out = train(cfg, device="cpu", progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(np.isfinite(r["ranking"]) and r["ranking"] > 0 and np.isfinite(r["score_mse"]) for r in log)
    assert (out / "final" / "model.safetensors").is_file()


def test_drawn_masks_train_the_heatmap_with_the_encoder_frozen(tmp_path, caplog):
    """freeze "encoder" trains the heads and the heatmap decoder alone, and the heatmap learns where raters
    drew artifacts; freeze "features" keeps the heatmap and says by name that the masks train nothing."""
    from safetensors.torch import load_file

    from evafusion_core.reward import load_reward_model
    from evafusion_core.reward.train import train
    from tests.test_reward import TINY, tiny_model

    store = FeedbackStore(tmp_path / "fb")
    mask = torch.zeros(24, 32)
    mask[:, :16] = 1  # every rater marks the left half
    for k in range(4):
        store.add_rating(*triple(20 + k), [3] * 5, annotator="ana", mask=mask)
    tiny_model().save_pretrained(tmp_path / "rm")
    cfg = json.loads((REPO / "training" / "configs" / "reward_small.json").read_text())
    cfg.update({"sources": [{"kind": "feedback", "path": str(store.root), "weight": 1.0}], "init": str(tmp_path / "rm"),
                "model": {"preset": "small", **TINY}, "steps": 40, "batch_size": 4, "warmup": 1, "lr": 1e-2,
                "checkpoint_every": 40, "val_every": 0, "val_samples": 0, "threads": 1, "preference_batch": 0,
                "freeze": "encoder", "out": str(tmp_path / "enc")})
    torch.set_num_threads(1)

    def left_minus_right(folder: Path) -> float:
        heat = load_reward_model(folder).predict(*(t[None] for t in triple(20)))["heatmap"][0, 0]
        return float(heat[:, :16].mean() - heat[:, 16:].mean())

    before = load_file(str(tmp_path / "rm" / "model.safetensors"))
    train(cfg, device="cpu", progress=False)
    after = load_file(str(tmp_path / "enc" / "final" / "model.safetensors"))
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"heads", "dec_out"} <= changed <= {"heads", "dec_in", "dec_blocks", "dec_out", "skips", "pixel_skips"}
    assert left_minus_right(tmp_path / "rm") < 0.1 < left_minus_right(tmp_path / "enc" / "final")

    with caplog.at_level("WARNING", logger="train_reward"):
        train({**cfg, "freeze": "features", "steps": 2, "out": str(tmp_path / "feat")}, device="cpu", progress=False)
    assert f"feedback {store.root}: 4 rated images carry artifact masks" in caplog.text
    kept = load_file(str(tmp_path / "feat" / "final" / "model.safetensors"))
    assert all(torch.equal(before[k], kept[k]) for k in before if not k.startswith("heads."))


def test_ranking_loss_prefers_the_chosen_side():
    from evafusion_core.reward.train import ranking_loss

    a, b = torch.tensor([0.8, 0.2]), torch.tensor([0.2, 0.8])
    w = torch.ones(2)
    right = ranking_loss(a, b, torch.tensor([1.0, 0.0]), w)
    wrong = ranking_loss(a, b, torch.tensor([0.0, 1.0]), w)
    assert right < 0.01 < wrong
    tie_equal = ranking_loss(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.5]), torch.ones(1))
    tie_apart = ranking_loss(torch.tensor([0.9]), torch.tensor([0.1]), torch.tensor([0.5]), torch.ones(1))
    assert tie_equal < tie_apart
