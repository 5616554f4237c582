"""Run ComfyUI workflows headless, without the browser (stdlib + ``requests``; never imports ComfyUI).

The pieces, usable on their own:

* :func:`comfyui_path` finds the ComfyUI folder (``COMFYUI_PATH`` or the one that
  ``scripts/provision_comfyui.py`` put under ``.cache/comfyui/ComfyUI``).
* :class:`ComfyServer` starts ``python main.py`` from that folder on 127.0.0.1 and a free port, waits until
  it answers, and stops it by PID.
* :func:`convert_to_api` turns the browser's saved workflow (``nodes`` + ``links``) into the API format
  that the server runs, the way the frontend's "Queue" button does it (widget order from ``/object_info``,
  Reroute / PrimitiveNode / muted / bypassed / Note nodes). :func:`is_api_format` tells them apart.
* :func:`apply_overrides` sets ``NODE_ID.INPUT=VALUE`` values on an API prompt.
* :func:`run_prompt` queues an API prompt, follows its progress (websocket, falling back to polling) and
  returns its outputs; :func:`output_files` lists the files those outputs saved.
* :func:`run_workflow` does all of it for a workflow file.

Every failure raises :class:`WorkflowError` with a message meant for the user.
"""

from __future__ import annotations

import atexit
import base64
import copy
import ctypes
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

__all__ = [
    "ComfyServer",
    "Progress",
    "WorkflowError",
    "apply_overrides",
    "comfyui_path",
    "convert_to_api",
    "is_api_format",
    "load_workflow",
    "output_files",
    "run_prompt",
    "run_workflow",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMFY_DIR = REPO_ROOT / ".cache" / "comfyui" / "ComfyUI"

#: Arguments every :class:`ComfyServer` gets (plus ``--cpu`` unless ``cpu=False``).
BASE_SERVER_ARGS = ("--disable-api-nodes", "--database-url", "sqlite:///:memory:")
#: Path-valued server flags that are made absolute (the server runs with the ComfyUI folder as cwd).
_PATH_FLAGS = frozenset({
    "--output-directory", "--input-directory", "--temp-directory", "--user-directory",
    "--base-directory", "--front-end-root", "--extra-model-paths-config",
})


class WorkflowError(RuntimeError):
    """A workflow could not be loaded, converted, queued or executed.

    ``details`` carries the server's structured answer where there is one (``node_errors`` of a rejected
    prompt, the ``execution_error`` message of a failed one).
    """

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})


@dataclass(frozen=True)
class Progress:
    """Progress of a running prompt, passed to ``on_progress`` callbacks.

    ``nodes_done`` of ``nodes_total`` nodes are finished (executed or served from cache); ``node`` is the
    node running now (None when unknown or finished); ``step``/``steps`` is that node's own progress bar
    (e.g. sampler or training steps) when it reports one.
    """

    nodes_done: int
    nodes_total: int
    node: str | None = None
    step: int | None = None
    steps: int | None = None


ProgressCallback = Callable[[Progress], None]


# =============================================================================================== paths
def comfyui_path() -> Path:
    """The ComfyUI folder to use: ``$COMFYUI_PATH``, else the repository's ``.cache/comfyui/ComfyUI``.

    Raises:
        WorkflowError: the folder does not exist or has no ``main.py`` (with what to run to fix it).
    """
    env = os.environ.get("COMFYUI_PATH")
    path = Path(env).expanduser().resolve() if env else DEFAULT_COMFY_DIR
    if not (path / "main.py").is_file():
        where = f"COMFYUI_PATH={env}" if env else str(path)
        raise WorkflowError(
            f"ComfyUI not found at {where} (no main.py). Run `make comfyui` "
            "(or `.venv/bin/python scripts/provision_comfyui.py`) to provision it, "
            "or point COMFYUI_PATH at an existing ComfyUI folder."
        )
    return path


def _die_with_parent_hook() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that makes the child get SIGTERM when the thread that started it dies,
    so that a killed test run or CLI does not leave a server behind. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _absolutize_path_args(args: Sequence[str]) -> list[str]:
    """Make the values of path flags absolute relative to the caller's cwd."""
    out: list[str] = []
    expect_path = False
    for arg in args:
        arg = str(arg)
        if expect_path:
            out.append(str(Path(arg).expanduser().resolve()))
            expect_path = False
            continue
        flag, eq, value = arg.partition("=")
        if flag in _PATH_FLAGS:
            if eq:
                out.append(f"{flag}={Path(value).expanduser().resolve()}")
            else:
                out.append(arg)
                expect_path = True
            continue
        out.append(arg)
    return out


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The last value given for ``flag`` in an argv-style list (``--flag V`` or ``--flag=V``)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _output_dir_from_args(args: Sequence[str], comfy_dir: Path) -> Path:
    """Where a server started with ``args`` from ``comfy_dir`` saves its outputs."""
    value = _flag_value(args, "--output-directory")
    if value:
        return (comfy_dir / value).resolve() if not Path(value).is_absolute() else Path(value)
    base = _flag_value(args, "--base-directory")
    if base:
        base_path = Path(base) if Path(base).is_absolute() else comfy_dir / base
        return (base_path / "output").resolve()
    return comfy_dir / "output"


# ============================================================================================== server
class ComfyServer:
    """A ComfyUI server process on 127.0.0.1, as a context manager.

    Example::

        with ComfyServer(["--cache-none", "--output-directory", "out"]) as server:
            outputs = run_prompt(server.url, api_prompt)

    Args:
        extra_args: more ``main.py`` arguments (``--cache-none``, ``--output-directory DIR``,
            ``--input-directory DIR``, ``--temp-directory DIR``...). Path values are made absolute.
        comfy_dir: the ComfyUI folder (default :func:`comfyui_path`).
        port: the port (default: a free one).
        cpu: pass ``--cpu`` (default True; set False to use the GPU).
        log_path: where the server's stdout/stderr go (default: a new file in the temp folder).
        startup_timeout: seconds to wait for the server to answer.
        python: the interpreter (default: the current one, ``sys.executable``).
        env: extra environment variables for the server.
        die_with_parent: on Linux, SIGTERM the server when the thread that started it ends (so a killed
            run leaves no server behind); set False when starting it from a short-lived thread.
    """

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        comfy_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        cpu: bool = True,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 180.0,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.comfy_dir = Path(comfy_dir).resolve() if comfy_dir else comfyui_path()
        self.extra_args = _absolutize_path_args(extra_args)
        self._requested_port = port
        self.cpu = cpu
        self.startup_timeout = startup_timeout
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self.startup_seconds: float | None = None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="comfyui-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        else:
            self.log_path = Path(log_path).resolve()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # -- properties -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8188`` (only while started)."""
        if self.port is None:
            raise WorkflowError("the ComfyUI server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the server process, or None when not started."""
        return self._proc.pid if self._proc else None

    @property
    def output_dir(self) -> Path:
        """The folder where this server's SaveImage & co. write."""
        return _output_dir_from_args(self.extra_args, self.comfy_dir)

    @property
    def input_dir(self) -> Path:
        """The folder LoadImage & co. read from."""
        value = _flag_value(self.extra_args, "--input-directory")
        return Path(value) if value else self.comfy_dir / "input"

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The full command line the server is (or will be) started with."""
        port = self.port if self.port is not None else (self._requested_port or 0)
        cmd = [self.python, "main.py"]
        if self.cpu:
            cmd.append("--cpu")
        cmd += ["--listen", "127.0.0.1", "--port", str(port), *BASE_SERVER_ARGS, *self.extra_args]
        return cmd

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> ComfyServer:
        """Start the server and wait until it answers; returns self.

        Raises:
            WorkflowError: the process exited or did not answer within ``startup_timeout`` (the message
                has the end of the server log).
        """
        if self.is_running():
            return self
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            self.port = self._requested_port or _free_port()
            try:
                self._spawn_and_wait()
                return self
            except WorkflowError:
                port_taken = "address already in use" in self.log_tail(50).lower()
                self.stop()
                if not port_taken or attempt == attempts - 1:
                    raise
        return self  # pragma: no cover - loop always returns or raises

    def _spawn_and_wait(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(), cwd=self.comfy_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent_hook() if self.die_with_parent else None,
        )
        atexit.register(self.stop)
        deadline = t0 + self.startup_timeout
        with requests.Session() as session:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise WorkflowError(
                        f"ComfyUI exited with code {code} during start-up ({' '.join(self.command())}).\n"
                        f"Log {self.log_path}, last lines:\n{self.log_tail()}"
                    )
                try:
                    if session.get(self.url + "/system_stats", timeout=2).status_code == 200:
                        self.startup_seconds = time.monotonic() - t0
                        log.info("ComfyUI answered on %s after %.1f s", self.url, self.startup_seconds)
                        return
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise WorkflowError(
                        f"ComfyUI did not answer on {self.url} within {self.startup_timeout:.0f} s.\n"
                        f"Log {self.log_path}, last lines:\n{self.log_tail()}"
                    )
                time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its PID: terminate, then kill after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            atexit.unregister(self.stop)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------------
    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def object_info(self) -> dict[str, Any]:
        """The server's ``/object_info`` (all node definitions)."""
        return get_object_info(self.url)


# ================================================================================================ HTTP
def _http(method: str, url: str, **kwargs: Any) -> requests.Response:
    try:
        return requests.request(method, url, timeout=kwargs.pop("timeout", 60), **kwargs)
    except requests.RequestException as exc:
        raise WorkflowError(f"ComfyUI server not reachable ({method} {url}): {exc}") from exc


def _json(resp: requests.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise WorkflowError(f"{what}: the server answered HTTP {resp.status_code} with no JSON: "
                            f"{resp.text[:300]}") from exc


def get_object_info(url: str) -> dict[str, Any]:
    """GET ``/object_info`` of the server at ``url``."""
    resp = _http("GET", url.rstrip("/") + "/object_info")
    if resp.status_code != 200:
        raise WorkflowError(f"GET /object_info failed with HTTP {resp.status_code}: {resp.text[:300]}")
    return _json(resp, "GET /object_info")


def server_output_dir(url: str) -> Path:
    """Best guess of where the server at ``url`` saves outputs, from its command line in /system_stats.

    Exact for a server on this machine started with absolute paths (as :class:`ComfyServer` does);
    relative ``--output-directory`` values are taken relative to :func:`comfyui_path`.
    """
    resp = _http("GET", url.rstrip("/") + "/system_stats")
    argv = [str(a) for a in _json(resp, "GET /system_stats").get("system", {}).get("argv", [])]
    main = next((a for a in argv if a.endswith("main.py")), None)
    comfy_dir = Path(main).resolve().parent if main and Path(main).is_absolute() else None
    if comfy_dir is None:
        try:
            comfy_dir = comfyui_path()
        except WorkflowError:
            comfy_dir = Path.cwd()
    return _output_dir_from_args(argv, comfy_dir)


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


# ========================================================================================== websocket
class _WebSocket:
    """A minimal RFC 6455 client (text/binary frames, ping/pong, close) on a plain socket."""

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "http"):
            raise OSError(f"unsupported websocket scheme {parts.scheme!r}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("websocket handshake: connection closed")
            head += chunk
        head, self._buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise OSError(f"websocket handshake refused: {lines[0]}")
        expected = base64.b64encode(hashlib.sha1((key + self._GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if headers.get("sec-websocket-accept") != expected:
            raise OSError("websocket handshake: bad Sec-WebSocket-Accept")

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("websocket closed by the server")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self, timeout: float) -> tuple[int, bytes] | None:
        """Next complete message as (opcode, payload), or None when none started within ``timeout``."""
        message = b""
        opcode = 0
        while True:
            if not self._buf:
                self.sock.settimeout(timeout)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    if not message:
                        return None
                    continue
                if not chunk:
                    raise ConnectionError("websocket closed by the server")
                self._buf += chunk
            self.sock.settimeout(30.0)  # a frame has started: read it whole
            b1, b2 = self._read(2)
            fin, op = b1 & 0x80, b1 & 0x0F
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b2 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 0x8:
                raise ConnectionError("websocket closed by the server")
            if op == 0x9:
                self._send(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op != 0x0:
                opcode = op
            message += payload
            if fin:
                return opcode, message

    def close(self) -> None:
        try:
            self._send(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


# ============================================================================================ running
def _format_node_errors(node_errors: Mapping[str, Any], api_prompt: Mapping[str, Any]) -> list[str]:
    lines = []
    for nid, err in node_errors.items():
        cls = err.get("class_type") or (api_prompt.get(nid) or {}).get("class_type", "?")
        for e in err.get("errors", []):
            detail = f": {e.get('details')}" if e.get("details") else ""
            lines.append(f"node {nid} ({cls}): {e.get('message')}{detail}")
    return lines


def _execution_failure(entry: Mapping[str, Any]) -> WorkflowError | None:
    status = entry.get("status") or {}
    messages = status.get("messages") or []
    for event, data in (m for m in messages if isinstance(m, (list, tuple)) and len(m) == 2):
        if event == "execution_error":
            # custom-node exception types come with the pack's module path (ComfyUI names a pack module
            # after its folder path): keep the class name only
            exc_type = str(data.get("exception_type") or "Exception").rsplit(".", 1)[-1]
            return WorkflowError(
                f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                f"{exc_type}: {str(data.get('exception_message') or '').strip()}",
                details=data,
            )
        if event == "execution_interrupted":
            return WorkflowError(f"execution interrupted at node {data.get('node_id')} "
                                 f"({data.get('node_type')})", details=data)
    if status.get("status_str") == "error":
        return WorkflowError(f"execution failed: {json.dumps(status)[:500]}", details=status)
    return None


def _cancel(url: str, prompt_id: str) -> None:
    for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
        try:
            requests.post(url + path, json=body, timeout=10)
        except requests.RequestException:
            pass


def run_prompt(
    url: str,
    api_prompt: Mapping[str, Any],
    *,
    timeout: float = 3600.0,
    on_progress: ProgressCallback | None = None,
    client_id: str | None = None,
    strict: bool = True,
    poll_interval: float = 0.5,
) -> dict[str, Any]:
    """Queue an API-format prompt on the server at ``url`` and wait for it to finish.

    Progress comes from the server's websocket (``/ws``); if that cannot be opened, /history is polled.

    Args:
        url: the server's base URL.
        api_prompt: the prompt (see :func:`convert_to_api`).
        timeout: seconds to wait for completion; on timeout the prompt is removed/interrupted.
        on_progress: called with :class:`Progress` as nodes finish and nodes report steps.
        client_id: websocket client id (default: a fresh uuid).
        strict: also fail when the server accepted the prompt but dropped some outputs as invalid.
        poll_interval: seconds between /history polls.

    Returns:
        The history entry's ``outputs``: ``{node id: {"images": [{"filename", "subfolder", "type"}], ...}}``.

    Raises:
        WorkflowError: the prompt was rejected (HTTP 400: the message lists every node error), a node
            raised (node id, class and exception message), the server went away, or the timeout passed.
    """
    url = url.rstrip("/")
    client_id = client_id or uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    total = len(api_prompt)
    done: set[str] = set()
    current: str | None = None

    def report(node: str | None = None, step: int | None = None, steps: int | None = None) -> None:
        if on_progress is not None:
            on_progress(Progress(min(len(done), total), total, node, step, steps))

    ws: _WebSocket | None = None
    try:
        ws = _WebSocket(f"ws{url[4:]}/ws?clientId={client_id}" if url.startswith("http") else url)
    except OSError as exc:
        log.debug("websocket unavailable (%s); polling /history", exc)

    try:
        resp = _http("POST", url + "/prompt",
                     json={"prompt": dict(api_prompt), "client_id": client_id, "prompt_id": prompt_id})
        body = _json(resp, "POST /prompt")
        if resp.status_code != 200:
            error = body.get("error") or {}
            lines = _format_node_errors(body.get("node_errors") or {}, api_prompt)
            if isinstance(error, Mapping):
                head = str(error.get("message") or f"HTTP {resp.status_code}")
            else:
                head = str(error)
            if isinstance(error, Mapping) and error.get("details") and not lines:
                head += f": {error['details']}"
            raise WorkflowError("ComfyUI rejected the prompt: " + head + "".join("\n  " + ln for ln in lines),
                                details=body)
        if body.get("node_errors") and strict:
            _cancel(url, prompt_id)
            lines = _format_node_errors(body["node_errors"], api_prompt)
            raise WorkflowError("ComfyUI dropped invalid outputs of the prompt:"
                                + "".join("\n  " + ln for ln in lines), details=body)
        prompt_id = body.get("prompt_id", prompt_id)
        report()

        deadline = time.monotonic() + timeout
        next_poll = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                _cancel(url, prompt_id)
                raise WorkflowError(f"prompt {prompt_id} did not finish within {timeout:.0f} s (cancelled)")
            if ws is not None:
                try:
                    msg = ws.recv(timeout=min(poll_interval, max(0.05, deadline - now)))
                except (OSError, ValueError) as exc:
                    log.debug("websocket lost (%s); polling /history", exc)
                    ws = None
                    msg = None
                if msg is not None and msg[0] == 0x1:
                    try:
                        event = json.loads(msg[1])
                    except ValueError:
                        event = {}
                    etype, data = event.get("type"), event.get("data") or {}
                    if isinstance(data, Mapping) and data.get("prompt_id") in (prompt_id, None):
                        if etype == "execution_cached":
                            done.update(str(n) for n in data.get("nodes") or [])
                            report(current)
                        elif etype == "executing":
                            if current is not None:
                                done.add(current)
                            current = None if data.get("node") is None else str(data.get("node"))
                            report(current)
                            if current is None and data.get("prompt_id") == prompt_id:
                                next_poll = 0.0
                        elif etype == "executed":
                            done.add(str(data.get("node")))
                            report(current)
                        elif etype == "progress":
                            report(str(data.get("node") or current), data.get("value"), data.get("max"))
                        elif etype in ("execution_success", "execution_error", "execution_interrupted"):
                            next_poll = 0.0
            else:
                time.sleep(max(0.0, min(poll_interval, next_poll - now)))
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + (poll_interval if ws is None else 2.0)
                hist = _json(_http("GET", f"{url}/history/{prompt_id}"), "GET /history")
                entry = hist.get(prompt_id) if isinstance(hist, Mapping) else None
                if entry:
                    failure = _execution_failure(entry)
                    if failure is not None:
                        raise failure
                    if (entry.get("status") or {}).get("completed", True):
                        done.update(api_prompt)
                        report()
                        return dict(entry.get("outputs") or {})
    finally:
        if ws is not None:
            ws.close()


def output_files(outputs: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> list[Path]:
    """Paths of the files that ``outputs`` (from :func:`run_prompt`) saved to the output folder.

    Looks at every list of ``{"filename", "subfolder", "type"}`` items (``images``, ``gifs``, ``video``...)
    and keeps those of type ``output`` (previews of type ``temp`` are left out), in node order.
    """
    base = Path(output_dir)
    paths: list[Path] = []
    for node_out in outputs.values():
        if not isinstance(node_out, Mapping):
            continue
        for items in node_out.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping) or not item.get("filename"):
                    continue
                if item.get("type", "output") == "output":
                    path = base / str(item.get("subfolder") or "") / str(item["filename"])
                    if path not in paths:
                        paths.append(path)
    return paths


def run_workflow(
    path: str | os.PathLike[str],
    sets: Sequence[str] = (),
    server_url: str | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    server_args: Sequence[str] = (),
    timeout: float = 3600.0,
) -> list[Path]:
    """Run a workflow file (browser or API format) and return the paths of the files it saved.

    Args:
        path: the workflow JSON.
        sets: ``NODE_ID.INPUT=VALUE`` overrides (see :func:`apply_overrides`).
        server_url: a running server to use; None starts a local :class:`ComfyServer` for this run.
        on_progress: progress callback (see :func:`run_prompt`).
        server_args: extra ``main.py`` arguments for the local server (ignored with ``server_url``).
        timeout: seconds to wait for the prompt to finish.

    Raises:
        WorkflowError: see :func:`load_workflow`, :func:`convert_to_api`, :func:`apply_overrides` and
            :func:`run_prompt`.
    """
    wf = load_workflow(path)
    if server_url is None:
        with ComfyServer(server_args) as server:
            return _run_loaded(wf, list(sets), server.url, server.output_dir, on_progress, timeout)
    return _run_loaded(wf, list(sets), server_url.rstrip("/"), server_output_dir(server_url), on_progress,
                       timeout)


def _run_loaded(wf: dict[str, Any], sets: list[str], url: str, output_dir: Path,
                on_progress: ProgressCallback | None, timeout: float) -> list[Path]:
    api = wf if is_api_format(wf) else convert_to_api(wf, get_object_info(url))
    api = apply_overrides(api, sets)
    outputs = run_prompt(url, api, timeout=timeout, on_progress=on_progress)
    return output_files(outputs, output_dir)
