"""The single model loader: bundled names, local folders and files, a hand-built offline Hub cache."""

from __future__ import annotations

import shutil

import pytest
import torch

from evafusion_core.errors import ModelLoadError
from evafusion_core.hub import WEIGHTS_DIR, bundled_names, load_fusion_model
from evafusion_core.models import create_model


def _same(a, b, pair):
    ir, vis = pair
    with torch.no_grad():
        return torch.equal(a(ir[:, :1], vis[:, :1]), b(ir[:, :1], vis[:, :1]))


def test_bundled_light_is_shipped_and_small():
    assert "light" in bundled_names()
    folder = WEIGHTS_DIR / "fusion" / "light"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 5 * 2**20
    model = load_fusion_model("light")
    assert model.architecture == "light" and not model.training


def test_local_folder_and_file_roundtrip(tmp_path, pair):
    model = create_model("light", channels=8, depth=2)
    torch.nn.init.normal_(model.fine[-1].weight)  # make the weights non-default
    model.save_pretrained(tmp_path / "m")
    loaded = load_fusion_model(tmp_path / "m")
    assert loaded.hub_config()["channels"] == 8 and _same(model, loaded, pair)
    from_file = load_fusion_model(tmp_path / "m" / "model.safetensors")
    assert _same(model, from_file, pair)


def test_strict_loading_rejects_wrong_weights(tmp_path):
    create_model("light", channels=8).save_pretrained(tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text().replace('"channels": 8', '"channels": 16')
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_fusion_model(tmp_path / "m")


def _build_offline_cache(cache, repo_id: str, source_folder) -> None:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/HASH/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(source_folder / f, snap / f)


def test_hub_id_from_offline_cache(tmp_path, pair):
    model = create_model("light")
    torch.nn.init.normal_(model.fine[-1].weight)
    model.save_pretrained(tmp_path / "src")
    _build_offline_cache(tmp_path / "cache", "evafusion/light-test", tmp_path / "src")
    loaded = load_fusion_model("evafusion/light-test", cache_dir=tmp_path / "cache", local_files_only=True)
    assert _same(model, loaded, pair)


def test_missing_everywhere_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_fusion_model("no_such_model")
    with pytest.raises(ModelLoadError, match="'light_warm' is no longer bundled.*use 'light'"):
        load_fusion_model("light_warm")  # a retired name says what replaced it
    with pytest.raises(ModelLoadError, match="offline"):
        load_fusion_model("evafusion/absent", cache_dir=tmp_path, local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_fusion_model(tmp_path / "empty")


def test_work_size_is_saved_and_can_be_set_when_loading(tmp_path):
    assert load_fusion_model("light").work_size is None  # the bundled light fuses at full size
    assert load_fusion_model("light", work_size=640).work_size == 640
    model = create_model("light", work_size=512)
    model.save_pretrained(tmp_path / "w")
    assert load_fusion_model(tmp_path / "w").work_size == 512  # a saved setting travels in config.json
    off = load_fusion_model(tmp_path / "w", work_size=0)
    assert off.work_size is None  # 0 turns it off
    off.save_pretrained(tmp_path / "off")  # and a model saved after loading keeps what it was set to
    assert load_fusion_model(tmp_path / "off").work_size is None
    with pytest.raises(ModelLoadError, match="work_size applies to 'light' networks; average is 'average'"):
        load_fusion_model("average", work_size=640)
    with pytest.raises(ModelLoadError, match="at least 8, got 4"):
        load_fusion_model("light", work_size=4)
