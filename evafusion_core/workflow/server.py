"""Find the ComfyUI folder, start a server from it on a free port, and stop it."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from .common import WorkflowError, _http, _json

log = logging.getLogger(__name__)


REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_COMFY_DIR = REPO_ROOT / ".cache" / "comfyui" / "ComfyUI"

#: Arguments every :class:`ComfyServer` gets (plus ``--cpu`` unless ``cpu=False``).
BASE_SERVER_ARGS = ("--disable-api-nodes", "--database-url", "sqlite:///:memory:")
#: Path-valued server flags that are made absolute (the server runs with the ComfyUI folder as cwd).
_PATH_FLAGS = frozenset({
    "--output-directory", "--input-directory", "--temp-directory", "--user-directory",
    "--base-directory", "--front-end-root", "--extra-model-paths-config",
})


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
def isolated_folders(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Create ``input/``, ``output/``, ``temp/`` and ``user/`` under ``root`` for a server that should
    touch nothing of the ComfyUI folder's own (tests, benchmarks); pass them on with :func:`folder_args`."""
    folders = {name: Path(root) / name for name in ("input", "output", "temp", "user")}
    for d in folders.values():
        d.mkdir(parents=True, exist_ok=True)
    return folders


def folder_args(folders: Mapping[str, str | os.PathLike[str]]) -> list[str]:
    """``{"input": DIR, ...}`` -> ``["--input-directory", DIR, ...]`` for :class:`ComfyServer`."""
    return [arg for name, path in folders.items() for arg in (f"--{name}-directory", str(path))]


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


