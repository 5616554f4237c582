"""Browser-format -> API conversion and headless runs, against a real ComfyUI server (CPU).

The fixtures under ``fixtures/`` are hand-written the way frontend 1.32 saves workflows, each with its
API-format twin (what the frontend's "Queue" sends), using core ComfyUI nodes only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from evafusion_core.workflow import (
    ComfyServer,
    Progress,
    WorkflowError,
    apply_overrides,
    comfyui_path,
    convert_to_api,
    is_api_format,
    load_workflow,
    output_files,
    run_prompt,
    run_workflow,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONVERT_CASES = ["plain_widgets_link", "reroute_primitive", "muted_bypassed_note", "empty_save"]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def comparable(api: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """class_type and inputs per node id (``_meta`` is ignored by the server)."""
    return {nid: (node["class_type"], node["inputs"]) for nid, node in api.items()}


def png_size_and_pixel(path: Path) -> tuple[tuple[int, int], tuple[int, ...]]:
    with Image.open(path) as img:
        return img.size, img.convert("RGB").getpixel((0, 0))


# ----------------------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("name", CONVERT_CASES)
def test_convert_matches_api_twin(name: str, object_info: dict[str, Any]) -> None:
    ui, twin = fixture(name), fixture(f"{name}.api")
    assert not is_api_format(ui)
    assert is_api_format(twin)
    api = convert_to_api(ui, object_info)
    assert comparable(api) == comparable(twin)
    assert all(node["_meta"]["title"] for node in api.values())


def test_titles_come_from_node_or_display_name(object_info: dict[str, Any]) -> None:
    api = convert_to_api(fixture("plain_widgets_link"), object_info)
    assert api["2"]["_meta"]["title"] == "Scale down"  # user title
    assert api["3"]["_meta"]["title"] == "Save Image"  # display name


def test_primitive_value_wins_over_stale_widget_value(object_info: dict[str, Any]) -> None:
    ui = fixture("reroute_primitive")
    primitive = next(n for n in ui["nodes"] if n["type"] == "PrimitiveNode")
    primitive["widgets_values"][0] = 56
    assert convert_to_api(ui, object_info)["2"]["inputs"]["width"] == 56


def _node(nid: int, typ: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
          widgets: list[Any] | None = None, mode: int = 0, **extra: Any) -> dict[str, Any]:
    node = {"id": nid, "type": typ, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": nid, "mode": mode,
            "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": typ}, **extra}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def test_bypass_without_matching_input_drops_the_link(object_info: dict[str, Any]) -> None:
    """A bypassed MaskToImage has no IMAGE input to pass on: its consumer gets nothing."""
    ui = {
        "nodes": [
            _node(1, "SolidMask", [], [{"name": "MASK", "type": "MASK", "links": [1]}], [1.0, 16, 16]),
            _node(2, "MaskToImage", [{"name": "mask", "type": "MASK", "link": 1}],
                  [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], mode=4),
            _node(3, "PreviewImage", [{"name": "images", "type": "IMAGE", "link": 2}], []),
        ],
        "links": [[1, 1, 0, 2, 0, "MASK"], [2, 2, 0, 3, 0, "IMAGE"]],
    }
    api = convert_to_api(ui, object_info)
    assert set(api) == {"1", "3"}
    assert api["1"]["inputs"] == {"value": 1.0, "width": 16, "height": 16}
    assert api["3"]["inputs"] == {}


def test_widget_layout_rules() -> None:
    """Companion widgets of frontend 1.32: seed-like INT controls, combo control + filter list, upload
    button after all other widgets, forceInput sockets, explicit control_after_generate=False."""
    object_info = {
        "Demo": {
            "input": {
                "required": {
                    "image": [["a.png", "b.png"], {"image_upload": True}],
                    "seed": ["INT", {"default": 0}],
                    "noise_seed": ["INT", {"default": 0, "control_after_generate": False}],
                    "pick": ["COMBO", {"options": ["x", "y"], "control_after_generate": True}],
                    "hidden_int": ["INT", {"forceInput": True}],
                    "tensor": ["IMAGE"],
                },
                "optional": {"text": ["STRING", {"multiline": True}], "flag": ["BOOLEAN", {}]},
            },
            "input_order": {"required": ["image", "seed", "noise_seed", "pick", "hidden_int", "tensor"],
                            "optional": ["text", "flag"]},
            "output": ["IMAGE"],
            "display_name": "Demo",
        }
    }
    saved = ["b.png", 5, "randomize", 9, "y", "fixed", "", "hello", True, "image"]
    ui = {"nodes": [_node(1, "Demo", [], [], saved)], "links": []}
    inputs = convert_to_api(ui, object_info)["1"]["inputs"]
    assert inputs == {"image": "b.png", "seed": 5, "noise_seed": 9, "pick": "y", "text": "hello",
                      "flag": True}

    # an older save without the control / filter / upload companions still maps by meaning
    ui["nodes"][0]["widgets_values"] = ["a.png", 6, 10, "x", "bye", False]
    inputs = convert_to_api(ui, object_info)["1"]["inputs"]
    assert inputs == {"image": "a.png", "seed": 6, "noise_seed": 10, "pick": "x", "text": "bye",
                      "flag": False}

    # packs that save widgets_values as a dict
    ui["nodes"][0]["widgets_values"] = {"seed": 3, "text": "t", "not_an_input": 1}
    assert convert_to_api(ui, object_info)["1"]["inputs"] == {"seed": 3, "text": "t"}

    # list values are boxed so that the server does not read them as links
    object_info["Demo"]["input"]["optional"]["text"] = ["STRING", {}]
    ui["nodes"][0]["widgets_values"] = {"text": ["a", "b"]}
    assert convert_to_api(ui, object_info)["1"]["inputs"] == {"text": {"__value__": ["a", "b"]}}


def test_missing_node_type_is_named(object_info: dict[str, Any]) -> None:
    ui = fixture("empty_save")
    ui["nodes"][0]["type"] = "EVAFNoSuchNode"
    with pytest.raises(WorkflowError, match=r"EVAFNoSuchNode \(node 1\).*IMPORT FAILED"):
        convert_to_api(ui, object_info)


def test_frontend_only_node_is_skipped(object_info: dict[str, Any]) -> None:
    ui = fixture("empty_save")
    ui["nodes"].append({"id": 9, "type": "Label (rgthree)", "pos": [0, 0], "size": [10, 10], "flags": {},
                        "order": 2, "mode": 0, "inputs": [], "outputs": [], "properties": {"fontSize": 30},
                        "widgets_values": []})
    assert comparable(convert_to_api(ui, object_info)) == comparable(fixture("empty_save.api"))


def test_subgraphs_are_rejected(object_info: dict[str, Any]) -> None:
    ui = fixture("empty_save")
    sub_id = "2b1c7a86-0000-4000-8000-000000000001"
    ui["definitions"] = {"subgraphs": [{"id": sub_id, "name": "My block", "nodes": [], "links": []}]}
    ui["nodes"].append(_node(5, sub_id, [], [], title="My block"))
    with pytest.raises(WorkflowError, match="node 5 is a subgraph .*My block.*Unpack Subgraph"):
        convert_to_api(ui, object_info)


def test_not_a_workflow_is_rejected(object_info: dict[str, Any]) -> None:
    with pytest.raises(WorkflowError, match="'nodes' list"):
        convert_to_api({"links": []}, object_info)


# ------------------------------------------------------------------------------------------ overrides
def test_apply_overrides() -> None:
    api = fixture("empty_save.api")
    sets = ["1.width=20", "1.height=7", '2.filename_prefix="a/b"', "Save Image.filename_prefix=c d"]
    out = apply_overrides(api, sets)
    assert out["1"]["inputs"]["width"] == 20 and out["1"]["inputs"]["height"] == 7
    assert out["2"]["inputs"]["filename_prefix"] == "c d"  # not JSON -> string; title works as node ref
    assert api["1"]["inputs"]["width"] == 40  # the input is not modified
    with pytest.raises(WorkflowError, match=r"no node with id '9'.*1 \(EmptyImage\)"):
        apply_overrides(api, ["9.width=1"])
    with pytest.raises(WorkflowError, match=r"has no input 'depth'.*batch_size, color, height, width"):
        apply_overrides(api, ["1.depth=1"])
    with pytest.raises(WorkflowError, match="expected NODE_ID.INPUT=VALUE"):
        apply_overrides(api, ["1.width"])


def test_output_files_keeps_saved_outputs_only(tmp_path: Path) -> None:
    outputs = {
        "3": {"images": [{"filename": "a_00001_.png", "subfolder": "x", "type": "output"},
                         {"filename": "p_00001_.png", "subfolder": "", "type": "temp"}]},
        "4": {"text": ["not a file"]},
    }
    assert output_files(outputs, tmp_path) == [tmp_path / "x" / "a_00001_.png"]


# -------------------------------------------------------------------------------------- file handling
def test_load_workflow_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(WorkflowError, match="not found: .*nope.json"):
        load_workflow(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkflowError, match="bad.json is not valid JSON"):
        run_workflow(bad, server_url="http://127.0.0.1:9")  # fails before touching the server


def test_comfyui_path_error_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(WorkflowError, match="make comfyui"):
        comfyui_path()


def test_server_start_failure_shows_log(comfy_dir: Path, tmp_path: Path) -> None:
    server = ComfyServer(["--no-such-flag"], comfy_dir=comfy_dir, log_path=tmp_path / "s.log",
                         startup_timeout=60)
    with pytest.raises(WorkflowError, match="(?s)exited with code 2.*unrecognized arguments"):
        server.start()
    assert not server.is_running()


# ------------------------------------------------------------------------------------ real executions
def test_run_workflow_empty_image_to_save(comfy_server: ComfyServer) -> None:
    events: list[Progress] = []
    paths = run_workflow(FIXTURES / "empty_save.json", server_url=comfy_server.url, on_progress=events.append)
    assert len(paths) == 1 and paths[0].is_file()
    assert paths[0].parent == comfy_server.output_dir / "evaf_test"
    assert png_size_and_pixel(paths[0]) == ((40, 30), (0, 255, 0))
    assert events and events[-1].nodes_done == events[-1].nodes_total == 2


def test_api_format_file_with_overrides(comfy_server: ComfyServer) -> None:
    paths = run_workflow(FIXTURES / "empty_save.api.json", ["1.width=20", "1.color=255"],
                         server_url=comfy_server.url)
    assert png_size_and_pixel(paths[0]) == ((20, 30), (0, 0, 255))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plain_widgets_link", {"plain": (32, 24)}),
        ("reroute_primitive", {"reroute": (40, 24), "crop": (16, 12)}),
        ("muted_bypassed_note", {"bypass": (32, 32)}),  # 64 wide if the muted branch were stitched on
    ],
)
def test_converted_workflows_run(name: str, expected: dict[str, tuple[int, int]],
                                 comfy_server: ComfyServer) -> None:
    paths = run_workflow(FIXTURES / f"{name}.json", server_url=comfy_server.url)
    sizes = {p.name.split("_")[0]: png_size_and_pixel(p)[0] for p in paths}  # evaf_test/<prefix>_00001_.png
    assert sizes == expected
    if name == "muted_bypassed_note":
        assert png_size_and_pixel(paths[0])[1] == (255, 255, 255)  # black, inverted once


def test_bad_prompts_name_the_node_and_server_keeps_serving(comfy_server: ComfyServer) -> None:
    good = fixture("empty_save.api")
    missing = copy.deepcopy(good)
    del missing["2"]["inputs"]["images"]
    expected = r"node 2 \(SaveImage\): Required input is missing: images"
    with pytest.raises(WorkflowError, match=expected) as err:
        run_prompt(comfy_server.url, missing, timeout=60)
    assert "2" in err.value.details["node_errors"]

    wrong = apply_overrides(good, ["1.width=-5"])
    with pytest.raises(WorkflowError, match=r"node 1 \(EmptyImage\): Value -5 smaller than min of 1"):
        run_prompt(comfy_server.url, wrong, timeout=60)

    outputs = run_prompt(comfy_server.url, apply_overrides(good, ["1.width=8"]), timeout=60)
    paths = output_files(outputs, comfy_server.output_dir)
    assert png_size_and_pixel(paths[0])[0] == (8, 30)


def test_node_exception_names_node_class_and_message(comfy_server: ComfyServer) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 1.0}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    expected = r"node 2 \(ImageBlur\) failed: RuntimeError: .*[Pp]adding"
    with pytest.raises(WorkflowError, match=expected) as err:
        run_prompt(comfy_server.url, prompt, timeout=60)
    assert err.value.details["node_id"] == "2"
    # and the server still runs the next prompt
    assert run_prompt(comfy_server.url, fixture("empty_save.api"), timeout=60)
