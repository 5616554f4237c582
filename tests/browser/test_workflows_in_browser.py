"""Every example workflow, dropped on the real ComfyUI frontend in headless Chromium and run from it.

For each browser-format ``workflows/*.json`` (found when the tests run, so new workflows are covered):

1. open the page of a real ComfyUI server and wait for the app; close first-run banners and toasts;
2. drop the file on the canvas as a user does (a ``drop`` event carrying the file);
3. check that no node type is missing (no missing-nodes dialog, every type registered in LiteGraph, no
   placeholder or error-marked node) and that every widget kept the value the file gives it;
4. compare the frontend's own API prompt (``app.graphToPrompt().output``) with our converter's
   (``evafusion_core.workflow.convert_to_api``) for the same file;
5. click Run, check that the frontend sent that prompt and the server accepted it, wait for the run to
   finish (server ``/history``), wait for the output images to appear on their nodes;
6. save ``<workflow>_graph.png`` (after the drop) and ``<workflow>_output.png`` (after the run, zoomed on
   the output nodes) in the screenshot folder (``out/browser`` unless EVAF_SCREENSHOT_DIR is set).

A second test drops the hand-written converter fixtures of ``tests/comfy/fixtures`` (reroutes,
primitives, muted/bypassed and note nodes) and compares the frontend's prompt with the converter's and
with their API twins, without running them. A third drops a workflow with an unknown node type and a
combo value that is not a choice, and checks that step 3 notices both.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from browser_driver import record_timing

from evafusion_core.workflow import ComfyServer, convert_to_api, is_api_format

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
FIXTURES = sorted(p for p in (REPO / "tests" / "comfy" / "fixtures").glob("*.json")
                  if not p.name.endswith(".api.json"))
RUN_TIMEOUT = float(os.environ.get("EVAF_BROWSER_RUN_TIMEOUT", "600"))


# =========================================================================================== helpers
def _strip(api: dict[str, Any]) -> dict[str, Any]:
    """class_type and inputs of an API prompt (``_meta`` and the rest are ignored)."""
    return {str(k): {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def prompt_differences(frontend: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """Human-readable differences between two API prompts (by node id, class_type and input)."""
    fe, us = _strip(frontend), _strip(ours)
    out: list[str] = []
    for nid in sorted(set(fe) | set(us), key=lambda s: (len(s), s)):
        if nid not in us:
            out.append(f"node {nid} ({fe[nid]['class_type']}): only in the frontend's prompt")
            continue
        if nid not in fe:
            out.append(f"node {nid} ({us[nid]['class_type']}): only in the converter's prompt")
            continue
        a, b = fe[nid], us[nid]
        if a["class_type"] != b["class_type"]:
            out.append(f"node {nid}: class_type frontend={a['class_type']!r} converter={b['class_type']!r}")
        for name in sorted(set(a["inputs"]) | set(b["inputs"])):
            va, vb = a["inputs"].get(name, "<absent>"), b["inputs"].get(name, "<absent>")
            if not _same(va, vb):
                out.append(f"node {nid} ({a['class_type']}).{name}: frontend={va!r} converter={vb!r}")
    return out


def load_problems(ui: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """What went wrong when the frontend loaded ``ui``: missing or broken nodes, rejected widget values."""
    problems: list[str] = []
    registered = set(state["registered_types"])
    for dialog in state["dialogs"]:
        problems.append(f"a dialog is open after the drop: {dialog[:300]!r}")
    missing = sorted({n["type"] for n in ui["nodes"] if n["type"] not in registered})
    if missing:
        problems.append(f"node types not registered in the frontend (missing nodes): {missing}")
    loaded = {str(n["id"]): n for n in state["nodes"]}
    by_id = {str(n["id"]): n for n in ui["nodes"]}
    origin_of_link = {}
    for link in ui.get("links") or []:
        if isinstance(link, list) and len(link) >= 2:
            origin_of_link[link[0]] = str(link[1])
        elif isinstance(link, dict):
            origin_of_link[link.get("id")] = str(link.get("origin_id"))
    for node in ui["nodes"]:
        nid = str(node["id"])
        got = loaded.get(nid)
        if got is None:
            problems.append(f"node {nid} ({node['type']}) is not in the loaded graph")
            continue
        label = f"node {nid} ({node['type']})"
        if got["type"] != node["type"]:
            problems.append(f"{label} loaded as type {got['type']!r}")
        if got["is_placeholder"] or not got["registered"]:
            problems.append(f"{label} loaded as a placeholder (missing node)")
        if got["has_errors"]:
            problems.append(f"{label} is marked has_errors")
        for key in ("color", "bgcolor"):
            if got[key] != node.get(key):
                problems.append(f"{label}: {key} is {got[key]!r} after loading, the file has {node.get(key)!r}")
        file_values = node.get("widgets_values")
        if not isinstance(file_values, list):
            continue  # no widgets, or a dict-style node that keeps its own values
        widgets = [w for w in got["widgets"] if w["serialize"]]
        # A widget converted to an input and fed by a PrimitiveNode takes the primitive's value.
        expected = list(file_values)
        for inp in node.get("inputs") or []:
            source = by_id.get(origin_of_link.get(inp.get("link"), ""))
            if inp.get("widget") and source and source["type"] == "PrimitiveNode":
                names = [w["name"] for w in widgets]
                if inp["widget"]["name"] in names and (source.get("widgets_values") or []):
                    expected[names.index(inp["widget"]["name"])] = source["widgets_values"][0]
        if len(widgets) < len(file_values):
            problems.append(f"{label}: the file has {len(file_values)} widget values, the node "
                            f"{len(widgets)} widgets ({[w['name'] for w in widgets]})")
        for value, widget in zip(expected, widgets, strict=False):
            if not _same(widget["value"], value):
                problems.append(f"{label} widget {widget['name']!r}: file {value!r}, frontend {widget['value']!r}")
                continue
            opts = widget["options"]
            if widget["type"] == "combo" and opts["values"] and value not in opts["values"]:
                problems.append(f"{label} widget {widget['name']!r}: {value!r} is not one of the "
                                f"choices {opts['values'][:10]}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if opts["min"] is not None and value < opts["min"]:
                    problems.append(f"{label} widget {widget['name']!r}: {value} < min {opts['min']}")
                if opts["max"] is not None and value > opts["max"]:
                    problems.append(f"{label} widget {widget['name']!r}: {value} > max {opts['max']}")
        saved = got["serialized_widgets_values"]
        if isinstance(saved, list) and not _same(saved[: len(expected)], expected):
            problems.append(f"{label}: saving the graph again gives widgets_values {saved}, expected {expected}")
    return problems


def wait_history(url: str, prompt_id: str, timeout: float) -> dict[str, Any]:
    """The server's history entry of ``prompt_id`` once it finished; fails on an execution error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = requests.get(f"{url}/history/{prompt_id}", timeout=30).json()
        entry = hist.get(prompt_id)
        if entry:
            status = entry.get("status") or {}
            if status.get("status_str") == "error":
                errors = [m for m in status.get("messages", []) if m and m[0] == "execution_error"]
                detail = errors[0][1] if errors else status
                pytest.fail(f"the workflow failed on the server: {json.dumps(detail)[:2000]}")
            if status.get("completed", True):
                return entry
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def image_outputs(entry: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Node id -> images listed in a history entry's outputs."""
    found: dict[str, list[dict[str, Any]]] = {}
    for nid, out in (entry.get("outputs") or {}).items():
        images = [i for i in (out.get("images") or []) if isinstance(i, dict) and i.get("filename")]
        if images:
            found[str(nid)] = images
    return found


def open_page(browser: Any, server: ComfyServer) -> dict[str, Any]:
    info = browser.call("open", url=server.url, timeout=120)
    assert info["frontend_version"], "the page did not report a frontend version"
    return info


# ============================================================================================= tests
@pytest.mark.parametrize("wf_path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_in_browser(wf_path: Path, browser: Any, browser_server: ComfyServer,
                             browser_object_info: dict[str, Any], shots_dir: Path) -> None:
    ui = json.loads(wf_path.read_text())
    if is_api_format(ui):
        pytest.skip(f"{wf_path.name} is in API format; the browser loads saved (browser-format) workflows")
    name = wf_path.stem
    t0 = time.monotonic()
    try:
        open_page(browser, browser_server)

        # -- load it the way a drop does, and check what the frontend made of it
        browser.call("drop", path=str(wf_path), timeout=90)
        state = browser.call("inspect")
        problems = load_problems(ui, state)
        assert not problems, f"{wf_path.name} did not load cleanly:\n  " + "\n  ".join(problems)
        browser.call("dismiss")
        graph_png = shots_dir / f"{name}_graph.png"
        browser.call("screenshot", path=str(graph_png))

        # -- the frontend's API prompt against our converter's
        frontend = browser.call("graph_to_prompt")["output"]
        ours = convert_to_api(ui, browser_object_info)
        diffs = prompt_differences(frontend, ours)
        assert not diffs, (f"{wf_path.name}: the frontend's API prompt differs from convert_to_api:\n  "
                           + "\n  ".join(diffs))

        # -- run it from the Run button
        queued = browser.call("queue", timeout=60)
        assert queued["status"] == 200, f"the server rejected the prompt: {json.dumps(queued['body'])[:2000]}"
        body = queued["body"]
        assert not body.get("node_errors"), f"node errors: {json.dumps(body['node_errors'])[:2000]}"
        sent = (queued.get("sent") or {}).get("prompt")
        assert sent is not None, "could not read the prompt the frontend sent"
        assert not prompt_differences(sent, frontend), "the queued prompt differs from graphToPrompt()"
        t_run = time.monotonic()
        entry = wait_history(browser_server.url, body["prompt_id"], RUN_TIMEOUT)
        record_timing(f"{name}: run on the server", time.monotonic() - t_run)

        images = image_outputs(entry)
        out_ids = [str(n) for n in (entry.get("outputs") or {})]
        assert out_ids, "the run produced no outputs"
        for items in images.values():
            for item in items:
                if item.get("type", "output") == "output":
                    path = browser_server.output_dir / str(item.get("subfolder") or "") / item["filename"]
                    assert path.is_file(), f"the server reports {path} but it does not exist"
        if images:
            browser.call("wait_images", node_ids=sorted(images), timeout=60)
        after = browser.call("inspect")
        assert after["last_execution_error"] is None, f"the frontend saw an error: {after['last_execution_error']}"
        assert not after["last_node_errors"], f"the frontend marks node errors: {after['last_node_errors']}"
        for nid in images:
            node = next(n for n in after["nodes"] if str(n["id"]) == nid)
            shown = [i for i in node["images"] if i["complete"] and i["width"] > 0]
            assert shown, f"node {nid} shows no output image"
        browser.call("dismiss")
        output_png = shots_dir / f"{name}_output.png"
        browser.call("screenshot", path=str(output_png), focus_node_ids=sorted(images) or out_ids)
        print(f"\nscreenshots of {name}: {graph_png} {output_png}")
    finally:
        browser.call("close_page")
        record_timing(f"{name}: whole test", time.monotonic() - t0)


def test_converter_fixtures_match_frontend(browser: Any, browser_server: ComfyServer,
                                           browser_object_info: dict[str, Any]) -> None:
    """Reroutes, primitives, muted/bypassed and note nodes: frontend prompt == converter == API twin."""
    if not FIXTURES:
        pytest.skip("no converter fixtures in tests/comfy/fixtures")
    failures: list[str] = []
    open_page(browser, browser_server)
    try:
        for path in FIXTURES:
            ui = json.loads(path.read_text())
            browser.call("drop", path=str(path), timeout=90)
            state = browser.call("inspect")
            problems = [p for p in load_problems(ui, state) if "dialog" not in p]
            failures += [f"{path.name}: {p}" for p in problems]
            browser.call("dismiss")
            frontend = browser.call("graph_to_prompt")["output"]
            failures += [f"{path.name} vs convert_to_api: {d}"
                         for d in prompt_differences(frontend, convert_to_api(ui, browser_object_info))]
            twin = path.with_name(path.stem + ".api.json")
            if twin.is_file():
                failures += [f"{path.name} vs {twin.name}: {d}"
                             for d in prompt_differences(frontend, json.loads(twin.read_text()))]
    finally:
        browser.call("close_page")
    assert not failures, "the frontend and the converter disagree:\n  " + "\n  ".join(failures)


def test_missing_node_and_bad_value_are_detected(browser: Any, browser_server: ComfyServer,
                                                 tmp_path: Path) -> None:
    """A workflow with an unknown node type and a combo value that is not a choice: the checks above must
    notice both (missing-nodes dialog, an unregistered placeholder node, the bad value), so that their
    passing means something."""
    source = REPO / "workflows" / "fuse_pair.json"
    if not source.is_file():
        pytest.skip("workflows/fuse_pair.json is not there")
    ui = json.loads(source.read_text())
    ui["nodes"][0]["type"] = "EVAF_NoSuchNode"
    loader = next(n for n in ui["nodes"] if n["type"] == "EVAF_FusionModelLoader")
    loader["widgets_values"][0] = "no_such_model"
    bad = tmp_path / "missing_node.json"
    bad.write_text(json.dumps(ui))
    open_page(browser, browser_server)
    try:
        browser.call("drop", path=str(bad), timeout=90)
        state = browser.call("inspect")
    finally:
        browser.call("close_page")
    problems = load_problems(ui, state)
    assert any("EVAF_NoSuchNode" in d for d in state["dialogs"]), f"no missing-nodes dialog: {state['dialogs']}"
    assert any("not registered" in p for p in problems), problems
    assert any("placeholder" in p for p in problems), problems
    assert any("'no_such_model' is not one of the choices" in p for p in problems), problems
