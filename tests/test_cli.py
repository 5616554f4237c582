"""The evafusion command line, run as a user would (in-process through main())."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from evafusion_core.cli import main


@pytest.fixture
def pair_dirs(tmp_path, write_demo_pairs):
    return write_demo_pairs(tmp_path, 2, 64, 80)


def test_fuse_file_and_folder(pair_dirs, capsys):
    out = pair_dirs / "out.png"
    assert main(["fuse", "--ir", str(pair_dirs / "ir/p0.png"), "--vis", str(pair_dirs / "vi/p0.png"),
                 "--out", str(out), "--side-by-side"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert Image.open(out).size == (80, 64) and (pair_dirs / "out_side_by_side.png").exists()
    assert main(["fuse", "--ir", str(pair_dirs / "ir"), "--vis", str(pair_dirs / "vi"), "--out",
                 str(pair_dirs / "fused"), "--model", "laplacian"]) == 0
    assert sorted(p.name for p in (pair_dirs / "fused").iterdir()) == ["p0.png", "p1.png"]


def test_fuse_at_a_working_size(pair_dirs, capsys):
    args = ["fuse", "--ir", str(pair_dirs / "ir/p0.png"), "--vis", str(pair_dirs / "vi/p0.png"), "--out"]
    assert main([*args, str(pair_dirs / "full.png")]) == 0
    assert main([*args, str(pair_dirs / "work.png"), "--work-size", "40"]) == 0
    full, work = (np.asarray(Image.open(pair_dirs / f"{n}.png"), np.float32) for n in ("full", "work"))
    assert work.shape == full.shape == (64, 80, 3) and 0 < np.abs(work - full).mean() < 20
    assert main([*args, str(pair_dirs / "x.png"), "--model", "max", "--work-size", "40"]) == 2
    assert "work_size applies to 'light' networks; max is 'max'" in capsys.readouterr().err
    assert not (pair_dirs / "x.png").exists()


def test_fuse_reports_bad_input_without_traceback(pair_dirs, capsys):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pair_dirs / "small.png")
    code = main(["fuse", "--ir", str(pair_dirs / "small.png"), "--vis", str(pair_dirs / "vi/p0.png"),
                 "--out", str(pair_dirs / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "size mismatch" in err and "small.png" in err
    assert main(["fuse", "--ir", str(pair_dirs / "nope.png"), "--vis", str(pair_dirs / "vi/p0.png"),
                 "--out", str(pair_dirs / "x.png")]) == 2
    assert "nope.png: file not found" in capsys.readouterr().err
    assert not (pair_dirs / "x.png").exists()


def test_fuse_folder_goes_past_bad_pairs_and_resumes(pair_dirs, capsys):
    (pair_dirs / "ir" / "p2.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pair_dirs / "vi" / "p2.png")
    out = pair_dirs / "fused"
    assert main(["fuse", "--ir", str(pair_dirs / "ir"), "--vis", str(pair_dirs / "vi"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "1 pair(s) skipped" in captured.err and "p2: " in captured.err and "p2.png" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]
    # an interrupted run continues: existing outputs are left as they are
    (out / "p1.png").unlink()
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(out / "p0.png")
    before = (out / "p0.png").read_bytes()
    main(["fuse", "--ir", str(pair_dirs / "ir"), "--vis", str(pair_dirs / "vi"), "--out", str(out), "--skip-existing"])
    assert "skipping 1 pair(s)" in capsys.readouterr().out
    assert (out / "p0.png").read_bytes() == before and Image.open(out / "p1.png").size == (80, 64)


def test_metrics_json_shape(pair_dirs, capsys):
    main(["fuse", "--ir", str(pair_dirs / "ir"), "--vis", str(pair_dirs / "vi"), "--out", str(pair_dirs / "f")])
    js = pair_dirs / "m.json"
    assert main(["metrics", "--ir", str(pair_dirs / "ir"), "--vis", str(pair_dirs / "vi"), "--fused",
                 str(pair_dirs / "f"), "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["convention"] == "tang" and set(data["images"]) == {"p0", "p1"}
    assert data["mean"]["Qabf"] == pytest.approx((data["images"]["p0"]["Qabf"] + data["images"]["p1"]["Qabf"]) / 2)
    assert "| **mean** |" in capsys.readouterr().out
    # A fused image of the wrong size is left out, named, and the run says so by its exit status.
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(pair_dirs / "f" / "p1.png")
    assert main(["metrics", "--ir", str(pair_dirs / "ir"), "--vis", str(pair_dirs / "vi"), "--fused",
                 str(pair_dirs / "f"), "--json", str(js)]) == 1
    err = capsys.readouterr().err
    assert "1 triple(s) skipped" in err and "p1.png" in err and "same height and width" in err
    assert set(json.loads(js.read_text())["images"]) == {"p0"}


def test_eval_writes_table_json_and_sheet(pair_dirs):
    out = pair_dirs / "eval"
    assert main(["eval", "--data", str(pair_dirs), "--models", "light,average", "--out", str(out)]) == 0
    table = (out / "results.md").read_text()
    assert "| light |" in table and "| average |" in table
    assert json.loads((out / "light.json").read_text())["mean"]["EN"] > 0
    assert Image.open(out / "contact_sheet.png").size[0] > 200


def test_bench_prints_and_writes_json(tmp_path, capsys):
    js = tmp_path / "b.json"
    assert main(["bench", "--size", "64x48", "--models", "light,average", "--repeats", "2", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert set(data["models"]) == {"light", "average"}
    assert data["models"]["light"]["parameters"] == 86166 and data["models"]["light"]["median_ms"] > 0
    assert data["cpu_cores"] >= 1 and "median_ms" in capsys.readouterr().out


def test_demo_without_comfyui_fuses_the_demo_pair(tmp_path, capsys):
    assert main(["demo", "--no-comfyui", "--out", str(tmp_path)]) == 0
    fused = np.asarray(Image.open(tmp_path / "fused_demo.png"), np.float32)
    assert fused.shape == (480, 640, 3) and fused.std() > 10
    assert (tmp_path / "fused_demo_side_by_side.png").exists()
    assert f"wrote {tmp_path / 'fused_demo.png'}" in capsys.readouterr().out
