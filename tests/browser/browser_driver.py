"""Python side of ``scripts/browser/comfy_driver.js``: starts it with Node.js and calls its commands.

The driver is a JSON-lines RPC server (one request per line on its stdin, one answer per line on its
stdout, its log on stderr). :class:`BrowserDriver` starts it, sends a request, waits for the answer with a
timeout and raises :class:`DriverError` with the driver's message (and the end of its log) on failure.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT_DIR = REPO / "scripts" / "browser"
DRIVER_JS = SCRIPT_DIR / "comfy_driver.js"
NODE_MODULES = SCRIPT_DIR / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = "run `bash scripts/browser/install.sh` (or `make test-browser`)"

#: (what, seconds) measured by the tests; printed at the end of the run by conftest.py.
TIMINGS: list[tuple[str, float]] = []


def record_timing(name: str, seconds: float) -> None:
    TIMINGS.append((name, seconds))


class DriverError(RuntimeError):
    """A driver command failed, timed out, or the driver process died."""


def missing_requirements() -> list[str]:
    """What the browser tests need and this machine lacks (empty when all is there)."""
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium not found at {CHROMIUM} (set CHROMIUM=/path/to/chromium)")
    if shutil.which("node") is None:
        missing.append("Node.js (`node`) not found on PATH")
    if not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        missing.append(f"playwright-core not installed in {NODE_MODULES}")
    return missing


class BrowserDriver:
    """``node comfy_driver.js`` as a context manager; :meth:`call` runs one command."""

    def __init__(self, log_path: Path, node: str | None = None) -> None:
        self.log_path = Path(log_path)
        self.node = node or shutil.which("node") or "node"
        self._proc: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._next_id = 0
        self._log_file: Any = None

    def start(self) -> BrowserDriver:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [self.node, str(DRIVER_JS)], cwd=SCRIPT_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log_file, text=True, bufsize=1, env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._answers.put(line)
        self._answers.put(None)  # EOF: the driver exited

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def call(self, cmd: str, timeout: float = 120.0, **args: Any) -> Any:
        """Run ``cmd`` with ``args``; return its result or raise :class:`DriverError`."""
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise DriverError(f"the browser driver is not running; log {self.log_path}:\n{self.log_tail()}")
        self._next_id += 1
        req_id = self._next_id
        proc.stdin.write(json.dumps({"id": req_id, "cmd": cmd, "args": args}) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DriverError(f"driver command {cmd} did not answer within {timeout:.0f} s; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            try:
                line = self._answers.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise DriverError(f"the browser driver exited during {cmd}; log {self.log_path}:\n{self.log_tail()}")
            answer = json.loads(line)
            if answer.get("id") != req_id:  # a late answer to a command that timed out
                continue
            if not answer.get("ok"):
                raise DriverError(f"driver command {cmd} failed: {answer.get('error')}")
            return answer.get("result")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(json.dumps({"id": -1, "cmd": "quit", "args": {}}) + "\n")
                    proc.stdin.close()
                    proc.wait(20)
                except (OSError, subprocess.TimeoutExpired, AssertionError):
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> BrowserDriver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
