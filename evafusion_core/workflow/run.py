"""Queue API prompts, follow their progress over the websocket (or by polling) and collect outputs."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from .common import Progress, ProgressCallback, WorkflowError, _http, _json
from .convert import apply_overrides, convert_to_api, is_api_format, load_workflow
from .server import ComfyServer, get_object_info, server_output_dir

log = logging.getLogger(__name__)


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
