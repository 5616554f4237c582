"""The human_rating workflow on the real server: scripted ratings, and the preview-then-record flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evafusion_core.demo import WORKFLOWS_DIR
from evafusion_core.feedback import FeedbackStore, export_feedback_hf, feedback_stats
from evafusion_core.workflow import WorkflowError, run_prompt

RATE_A, RATE_B, COMPARE = "6", "7", "8"


def _prompt(dataset: Path, mode: str, start: int, annotator: str = "scripted") -> dict:
    api = json.loads((WORKFLOWS_DIR / "api" / "human_rating.json").read_text())
    api["1"]["inputs"]["start"] = start
    for nid in (RATE_A, RATE_B, COMPARE):
        api[nid]["inputs"].update(dataset=str(dataset), mode=mode, annotator=annotator)
    return api


def test_scripted_ratings_are_recorded(comfy_server, demo_inputs, tmp_path):
    """A scripted annotator who prefers light over average rates both demo-folder pairs."""
    for start in (0, 1):
        api = _prompt(tmp_path, "record now", start)
        api[RATE_A]["inputs"].update(thermal_retention=5, texture_preservation=4, artifacts=5, sharpness=4, overall=5)
        api[RATE_B]["inputs"].update(thermal_retention=2, texture_preservation=3, artifacts=4, sharpness=2, overall=2)
        api[COMPARE]["inputs"].update(preference="A is better", reason="hot targets stand out")
        # An artifact mask from a core node, the way a painted Load Image mask arrives.
        api["9"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 320, "height": 240}}
        api[RATE_B]["inputs"]["artifact_mask"] = ["9", 0]
        outputs = run_prompt(comfy_server.url, api)
        assert outputs[RATE_A]["text"][0].startswith("Recorded version 1")
        assert len(outputs[RATE_A]["images"]) == 1  # IR | visible | fused preview
    store = FeedbackStore(tmp_path)
    ratings = store.ratings()
    assert sorted(r["model"] for r in ratings) == ["average", "average", "light", "light"]
    assert {r["scores"]["Overall"] for r in ratings if r["model"] == "light"} == {5.0}
    assert {r["scores"]["Overall"] for r in ratings if r["model"] == "average"} == {2.0}
    assert len({r["source"] for r in ratings}) == 2
    prefs = store.preferences()
    assert [p["choice"] for p in prefs] == ["A", "A"] and prefs[0]["models"] == {"a": "light", "b": "average"}
    assert prefs[0]["reason"] == "hot targets stand out"
    for r in ratings:  # stored images are the fused outputs at the folder's size
        assert store.image(r["images"]["fused"]).shape == (3, 240, 320)
        if r["model"] == "average":
            assert store.image(r["mask"], grey=True).min() == 1.0
        else:
            assert r["mask"] is None
    stats = feedback_stats(store)
    assert stats["annotators"]["scripted"]["ratings"] == 4 and stats["preferences"]["latest"] == 2
    counts = export_feedback_hf(store, tmp_path / "hf", dev_fraction=0, test_fraction=0)
    assert counts == {"train": 4}


def test_preview_first_records_only_what_was_seen(comfy_server, demo_inputs, tmp_path):
    run_prompt(comfy_server.url, _prompt(tmp_path / "other", "preview first", start=0))  # the nodes show pair 0
    store = FeedbackStore(tmp_path)
    api = _prompt(tmp_path, "preview first", start=1, annotator="ana")  # then pair 1, new to them
    api[RATE_A]["inputs"]["overall"] = 4
    first = run_prompt(comfy_server.url, api)
    assert first[RATE_A]["text"][0].startswith("New image")
    assert first[COMPARE]["text"][0].startswith("New pair")
    assert store.read().records == []  # nothing recorded for images nobody had seen
    second = run_prompt(comfy_server.url, api)
    assert second[RATE_A]["text"][0].startswith("Recorded version 1")
    assert len(store.ratings()) == 2 and len(store.preferences()) == 1
    third = run_prompt(comfy_server.url, api)  # queued again, nothing changed
    assert third[RATE_A]["text"][0].startswith("Already recorded")
    assert len(store.read().records) == 3
    api[RATE_A]["inputs"]["overall"] = 2  # the annotator changes their mind: a new version, the old one kept
    fourth = run_prompt(comfy_server.url, api)
    assert fourth[RATE_A]["text"][0].startswith("Recorded version 2")
    light = [r for r in store.ratings(latest=False) if r["model"] == "light"]
    assert [(r["version"], r["scores"]["Overall"]) for r in light] == [(1, 4.0), (2, 2.0)]
    assert [r["scores"]["Overall"] for r in store.ratings() if r["model"] == "light"] == [2.0]


def test_rating_without_annotator_is_refused_by_name(comfy_server, demo_inputs, tmp_path):
    api = _prompt(tmp_path, "record now", start=0, annotator="  ")
    with pytest.raises(WorkflowError, match="annotator is empty"):
        run_prompt(comfy_server.url, api)
    assert not (tmp_path / "feedback.jsonl").exists()
