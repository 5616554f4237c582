"""Browser-format workflows (``nodes`` + ``links``) to the API format the server runs, as the frontend does."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import WorkflowError


# =========================================================================================== formats
def is_api_format(wf: Any) -> bool:
    """True for an API-format prompt (``{"id": {"class_type": ..., "inputs": {...}}, ...}``).

    False for the browser's saved format (a dict with ``nodes`` and ``links``) and anything else.
    """
    if not isinstance(wf, Mapping) or not wf or isinstance(wf.get("nodes"), list):
        return False
    return all(isinstance(v, Mapping) and "class_type" in v for v in wf.values())


def load_workflow(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a workflow JSON file (either format).

    Raises:
        WorkflowError: naming the file, when it is missing, unreadable, not JSON or not an object.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"workflow file not found: {p}") from None
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file {p}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"workflow file {p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WorkflowError(f"workflow file {p} holds a JSON {type(data).__name__}, not a workflow object")
    return data


# ============================================================================ browser format -> API
#: Input types the frontend (1.32) draws as widgets; everything else is a socket.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "COLOR", "TEXTAREA"})
#: Values of the "control after generate" companion widget (booleans in very old files).
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
#: Combo options that make the frontend add an upload button widget (serialized as "image").
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
#: Frontend-only node types, never sent to the server.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_NORMAL, MODE_NEVER, MODE_BYPASS = 0, 2, 4


@dataclass(frozen=True)
class _Link:
    origin: str
    origin_slot: int
    target: str
    target_slot: int
    type: Any


def _spec_type_and_options(spec: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(spec, (list, tuple)) and spec:
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], opts
    return spec, {}


def _widget_kind(spec: Any) -> str | None:
    """The widget type of an input spec of /object_info, or None when it is a socket."""
    typ, opts = _spec_type_and_options(spec)
    if opts.get("forceInput"):
        return None
    if isinstance(typ, (list, tuple)):
        return "COMBO"
    typ = opts.get("widgetType") or typ
    return typ if isinstance(typ, str) and typ in WIDGET_TYPES else None


def _has_control(kind: str, name: str, opts: Mapping[str, Any]) -> bool:
    """Whether the frontend adds a "control after generate" widget after this one.

    INT: when ``control_after_generate`` is set, or (when absent) for inputs named seed/noise_seed.
    COMBO: only when ``control_after_generate`` is set; a combo then also gets a filter-list widget.
    """
    flag = opts.get("control_after_generate")
    if kind == "INT":
        return bool(flag) if flag is not None else name in ("seed", "noise_seed")
    if kind == "COMBO":
        return bool(flag)
    return False


def _ordered_inputs(node_def: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, spec, optional) of a node definition in the frontend's order."""
    inputs = node_def.get("input") or {}
    required = inputs.get("required") or {}
    optional = inputs.get("optional") or {}
    order = node_def.get("input_order") or {}
    out: list[tuple[str, Any, bool]] = []
    seen: set[str] = set()
    for section, specs, is_opt in (("required", required, False), ("optional", optional, True)):
        names = [n for n in order.get(section, []) if n in specs] if order else list(specs)
        names += [n for n in specs if n not in names]
        for name in names:
            if name not in seen:
                seen.add(name)
                out.append((name, specs[name], is_opt))
    return out


def _widget_layouts(node_def: Mapping[str, Any]) -> list[list[tuple[str, str]]]:
    """Candidate layouts of ``widgets_values``: lists of (role, input name), role in
    value/control/filter/upload/legacy. First the layout of frontend 1.32, then older variants."""
    ordered = _ordered_inputs(node_def)
    upload_for = next(
        (name for name, spec, is_opt in ordered
         if not is_opt and _widget_kind(spec) == "COMBO"
         and any(_spec_type_and_options(spec)[1].get(flag) for flag in UPLOAD_FLAGS)),
        None,
    )

    def build(upload_after_required: bool, legacy_force_input: bool) -> list[tuple[str, str]]:
        slots: list[tuple[str, str]] = []
        placed_upload = False
        for name, spec, is_opt in ordered:
            if upload_after_required and upload_for and not placed_upload and is_opt:
                slots.append(("upload", upload_for))
                placed_upload = True
            kind = _widget_kind(spec)
            typ, opts = _spec_type_and_options(spec)
            if kind is None:
                if legacy_force_input and opts.get("forceInput") and isinstance(typ, str):
                    slots.append(("legacy", name))
                    if typ == "INT" and _has_control("INT", name, opts):
                        slots.append(("control", name))
                continue
            slots.append(("value", name))
            if _has_control(kind, name, opts):
                slots.append(("control", name))
                if kind == "COMBO":
                    slots.append(("filter", name))
        if upload_for and not placed_upload:
            slots.append(("upload", upload_for))
        return slots

    layouts = [build(False, False), build(True, False), build(False, True)]
    unique: list[list[tuple[str, str]]] = []
    for layout in layouts:
        if layout not in unique:
            unique.append(layout)
    return unique


def _widget_values(node: Mapping[str, Any], node_def: Mapping[str, Any]) -> dict[str, Any]:
    """Map a saved node's ``widgets_values`` to {input name: value} using its definition."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    layouts = _widget_layouts(node_def)
    widget_names = [name for role, name in layouts[0] if role == "value"]
    if isinstance(values, Mapping):  # some packs save {name: value}
        return {k: v for k, v in values.items() if k in widget_names}
    if not isinstance(values, list):
        raise WorkflowError(f"node {node.get('id')} ({node.get('type')}): widgets_values is not a list")
    for layout in layouts:
        if len(layout) == len(values):
            return {name: v for (role, name), v in zip(layout, values, strict=True) if role == "value"}
    # Lengths disagree (older frontend, extension widgets...): skip companion widgets only where the
    # value looks like one and there are more values left than value slots.
    layout = layouts[0]
    out: dict[str, Any] = {}
    i = 0
    for pos, (role, name) in enumerate(layout):
        if i >= len(values):
            break
        value_slots_left = sum(1 for r, _ in layout[pos:] if r == "value")
        surplus = len(values) - i - value_slots_left
        v = values[i]
        if role == "value":
            out[name] = v
            i += 1
        elif role == "control" and surplus > 0 and (isinstance(v, bool) or v in CONTROL_VALUES):
            i += 1
        elif role in ("filter", "upload") and surplus > 0 and isinstance(v, str):
            i += 1
    return out


def _parse_links(raw_links: Any) -> dict[int, _Link]:
    links: dict[int, _Link] = {}
    for item in raw_links or []:
        if isinstance(item, Mapping):  # schema version 1 objects
            lid, origin, oslot = item.get("id"), item.get("origin_id"), item.get("origin_slot")
            target, tslot, typ = item.get("target_id"), item.get("target_slot"), item.get("type")
        elif isinstance(item, (list, tuple)) and len(item) >= 5:
            lid, origin, oslot, target, tslot = item[:5]
            typ = item[5] if len(item) > 5 else "*"
        else:
            raise WorkflowError(f"malformed link in workflow: {item!r}")
        if lid is None or origin is None or target is None:
            raise WorkflowError(f"malformed link in workflow: {item!r}")
        links[int(lid)] = _Link(str(origin), int(oslot or 0), str(target), int(tslot or 0), typ)
    return links


def _type_set(typ: Any) -> set[str]:
    if isinstance(typ, (list, tuple)):
        return {"COMBO"}
    return {t.strip().upper() for t in str(typ if typ is not None else "*").split(",")}


def _types_compatible(a: Any, b: Any) -> bool:
    sa, sb = _type_set(a), _type_set(b)
    return bool({"*", ""} & sa or {"*", ""} & sb or sa & sb)


class _Converter:
    """Resolves one saved workflow against /object_info (see :func:`convert_to_api`)."""

    def __init__(self, ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        if not isinstance(ui, Mapping) or not isinstance(ui.get("nodes"), list):
            raise WorkflowError("not a ComfyUI workflow: expected an object with a 'nodes' list")
        self.object_info = object_info
        self.nodes: dict[str, Mapping[str, Any]] = {}
        for node in ui["nodes"]:
            if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
                raise WorkflowError(f"malformed node in workflow: {str(node)[:200]}")
            self.nodes[str(node["id"])] = node
        self.links = _parse_links(ui.get("links"))
        self._check_unsupported(ui)

    # -- classification ---------------------------------------------------------------------------
    def _check_unsupported(self, ui: Mapping[str, Any]) -> None:
        subgraph_ids = {
            str(sg.get("id")) for sg in ((ui.get("definitions") or {}).get("subgraphs") or [])
            if isinstance(sg, Mapping)
        }
        group_nodes = set(((ui.get("extra") or {}).get("groupNodes") or {}).keys())
        for nid, node in self.nodes.items():
            typ = str(node["type"])
            if typ in subgraph_ids:
                raise WorkflowError(
                    f"node {nid} is a subgraph ({node.get('title') or typ}); subgraphs are not supported "
                    "by this converter: unpack it in ComfyUI (right click > Unpack Subgraph) or export the "
                    "workflow in API format"
                )
            if typ.startswith(("workflow>", "workflow/")) or typ in group_nodes:
                raise WorkflowError(
                    f"node {nid} is a legacy group node ({typ}); group nodes are not supported: convert it "
                    "back to nodes in ComfyUI or export the workflow in API format"
                )
        missing = []
        for nid, node in self.nodes.items():
            typ = node["type"]
            if typ in self.object_info or typ in VIRTUAL_NODE_TYPES or node.get("mode") == MODE_NEVER:
                continue
            props = node.get("properties") or {}
            backend_keys = ("Node name for S&R", "cnr_id", "aux_id")
            if isinstance(props, Mapping) and any(k in props for k in backend_keys):
                missing.append(f"{typ} (node {nid})")
        if missing:
            raise WorkflowError(
                "node types not available on the ComfyUI server: " + ", ".join(missing)
                + ". Install the custom node pack(s) that provide them (check the server log for "
                "'IMPORT FAILED'), or mute/remove those nodes."
            )

    def _is_virtual(self, node: Mapping[str, Any]) -> bool:
        return node["type"] not in self.object_info

    # -- link resolution (mirrors the frontend's ExecutableNodeDTO) --------------------------------
    def _inputs(self, node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [i for i in (node.get("inputs") or []) if isinstance(i, Mapping)]

    def resolve_input(self, nid: str, slot: int, visited: set[tuple[str, str, int]],
                      want_type: Any = None) -> tuple[str, Any, int] | None:
        """Where input ``slot`` of node ``nid`` really comes from: ("link", node, slot),
        ("value", value, -1), or None when nothing (usable) is connected."""
        key = ("in", nid, slot)
        if key in visited:
            raise WorkflowError(f"circular link through node {nid} ({self.nodes[nid]['type']})")
        visited.add(key)
        inputs = self._inputs(self.nodes[nid])
        if slot >= len(inputs):
            return None
        inp = inputs[slot]
        link = self.links.get(inp["link"]) if isinstance(inp.get("link"), int) else None
        if link is None or link.origin not in self.nodes:
            return None
        return self.resolve_output(link.origin, link.origin_slot,
                                   want_type if want_type is not None else inp.get("type", "*"), visited)

    def resolve_output(self, nid: str, slot: int, want_type: Any,
                       visited: set[tuple[str, str, int]]) -> tuple[str, Any, int] | None:
        key = ("out", nid, slot)
        if key in visited:
            raise WorkflowError(f"circular link through node {nid} ({self.nodes[nid]['type']})")
        visited.add(key)
        node = self.nodes[nid]
        if node.get("mode") == MODE_BYPASS:
            index = self._bypass_slot(node, slot, want_type)
            return None if index is None else self.resolve_input(nid, index, visited)
        if node["type"] == "PrimitiveNode":
            values = node.get("widgets_values")
            if isinstance(values, list) and values:
                return ("value", values[0], -1)
            return None
        if self._is_virtual(node):  # Reroute and other frontend-only pass-through nodes
            inputs = self._inputs(node)
            if slot < len(inputs) and inputs[slot].get("link") is not None:
                return self.resolve_input(nid, slot, visited, want_type)
            return None
        return ("link", nid, slot)

    def _bypass_slot(self, node: Mapping[str, Any], slot: int, want_type: Any) -> int | None:
        """The input a bypassed node passes to its output ``slot``: same index when its type fits,
        else the first input of exactly the wanted type, else the first compatible one."""
        inputs = self._inputs(node)
        if not inputs:
            return None
        outputs = [o for o in (node.get("outputs") or []) if isinstance(o, Mapping)]
        out_type = outputs[slot].get("type", "*") if slot < len(outputs) else "*"
        if want_type in ("*", "", None):
            return slot if slot < len(inputs) else 0
        if slot < len(inputs):
            t = inputs[slot].get("type", "*")
            if _types_compatible(t, out_type) and _types_compatible(t, want_type):
                return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == want_type:
                return i
        for i, inp in enumerate(inputs):
            t = inp.get("type", "*")
            if _types_compatible(t, out_type) and _types_compatible(t, want_type):
                return i
        return None

    # -- conversion -------------------------------------------------------------------------------
    def convert(self) -> dict[str, Any]:
        api: dict[str, Any] = {}
        for nid, node in self.nodes.items():
            if node.get("mode") in (MODE_NEVER, MODE_BYPASS) or self._is_virtual(node):
                continue
            node_def = self.object_info[node["type"]]
            inputs: dict[str, Any] = {}
            for name, value in _widget_values(node, node_def).items():
                inputs[name] = {"__value__": value} if isinstance(value, list) else value
            for slot, inp in enumerate(self._inputs(node)):
                if inp.get("link") is None:
                    continue
                widget = inp.get("widget")
                name = inp.get("name")
                if isinstance(widget, Mapping) and widget.get("name"):
                    name = widget["name"]
                src = self.resolve_input(nid, slot, set())
                if src is None:
                    continue
                kind, origin, origin_slot = src
                if kind == "value":
                    inputs[name] = {"__value__": origin} if isinstance(origin, list) else origin
                else:
                    inputs[name] = [origin, origin_slot]
            title = node.get("title") or node_def.get("display_name") or node["type"]
            api[nid] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
        # inputs fed by muted (or otherwise removed) nodes are dropped, like the frontend does
        for entry in api.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and str(value[0]) not in api:
                    del entry["inputs"][name]
        return api


def convert_to_api(ui_workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    """Convert the browser's saved workflow format to the API format the server runs.

    Follows the frontend (1.32): widget values are matched to inputs in /object_info order (required,
    then optional; sockets skipped; the companion widgets are skipped: "control after generate" after a
    seed-like INT or a combo with ``control_after_generate`` (plus its filter list), the upload button
    of ``image_upload`` combos); links are resolved through ``Reroute`` and other frontend-only nodes;
    ``PrimitiveNode`` values go into the widget inputs they feed; muted nodes (mode 2) are removed with
    the inputs they fed; bypassed nodes (mode 4) are removed and their consumers re-linked to the
    bypassed node's input of the matching type; ``Note``/``MarkdownNote`` and other frontend-only nodes
    are skipped. List values are wrapped as ``{"__value__": [...]}``.

    Args:
        ui_workflow: the saved workflow (``nodes``, ``links``...).
        object_info: the server's ``/object_info``.

    Returns:
        ``{"<node id>": {"inputs": {...}, "class_type": ..., "_meta": {"title": ...}}}``.

    Raises:
        WorkflowError: malformed workflow, node types the server lacks, subgraphs or group nodes.
    """
    return _Converter(ui_workflow, object_info).convert()


# ========================================================================================= overrides
def apply_overrides(api: Mapping[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """Return a copy of an API prompt with ``NODE.INPUT=VALUE`` assignments applied.

    ``NODE`` is a node id (or a node title when it is unique). ``VALUE`` is parsed as JSON when it parses
    (``5``, ``0.5``, ``true``, ``"text"``, ``[...]``), else taken as a string.

    Raises:
        WorkflowError: malformed assignment, unknown node id or unknown input (with the valid choices).
    """
    out = copy.deepcopy(dict(api))
    if isinstance(sets, str):
        sets = [sets]
    for item in sets:
        target, eq, raw = str(item).partition("=")
        node_ref, dot, input_name = target.strip().partition(".")
        if not eq or not dot or not node_ref or not input_name:
            raise WorkflowError(f"bad override {item!r}: expected NODE_ID.INPUT=VALUE")
        node_id = node_ref
        if node_id not in out:
            titled = [k for k, v in out.items() if (v.get("_meta") or {}).get("title") == node_ref]
            if len(titled) != 1:
                choices = ", ".join(f"{k} ({v.get('class_type')})" for k, v in out.items())
                raise WorkflowError(f"override {item!r}: no node with id {node_ref!r}; nodes: {choices}")
            node_id = titled[0]
        inputs = out[node_id].setdefault("inputs", {})
        if input_name not in inputs:
            raise WorkflowError(
                f"override {item!r}: node {node_id} ({out[node_id].get('class_type')}) has no input "
                f"{input_name!r}; inputs: {', '.join(sorted(inputs)) or '(none)'}"
            )
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        inputs[input_name] = value
    return out


